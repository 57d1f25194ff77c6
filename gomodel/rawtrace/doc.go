// Package rawtrace decodes Linux 5.10's ftrace ring buffer in its binary form: the pages that
// per_cpu/cpuN/trace_pipe_raw hands out, read with the kernel's own events/header_page and
// events/*/format files (as trace-cmd and perf read them), into gomodel's events, merged
// across CPUs in the order of ftrace's trace file, so that gomodel's replay of the raw pages
// gives the report the text of the same buffers gives.
//
// Lost events are counted from the pages: ring_buffer_read_page() flags a page that follows
// overwritten events (RB_MISSED_EVENTS in its commit word) and stores their number after the
// data when the page has room (RB_MISSED_STORED).
//
// The package is pure: it reads the readers and the fs.FS it is given, nothing else.
package rawtrace
