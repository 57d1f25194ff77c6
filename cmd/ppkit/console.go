package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/ppkit/ppkit/harness"
)

func init() {
	register(&command{name: "console", summary: "`console check FILE...`: the kernel reports in a console log (serial capture, dmesg, netconsole; - for stdin)", run: runConsole})
}

// consoleFile is one log's verdict, as --json prints it.
type consoleFile struct {
	File    string           `json:"file"`
	Reports []harness.Report `json:"reports"`
	Error   string           `json:"error,omitempty"`
}

// runConsole is `ppkit console check`: the same report parser that judges a guest's console
// (harness.ParseReports), on logs from anywhere — a real board's serial capture among them.
// Exit 1 when a log holds a report, 0 when every log is clean, 2 when a log cannot be read and
// no other holds a report (a report is a verdict on the kernel whatever else failed).
func runConsole(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		return usageErrorf("usage: ppkit console check [--json] FILE... (- reads stdin)")
	}
	fs := newFlagSet("console check", stderr)
	asJSON := fs.Bool("json", false, "print each file's reports as JSON")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageErrorf("console check: name at least one log file (- reads stdin)")
	}
	var files []consoleFile
	found, unreadable := 0, 0
	for _, name := range fs.Args() {
		f := consoleFile{File: name, Reports: []harness.Report{}}
		var data []byte
		var err error
		if name == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(name)
		}
		if err != nil {
			f.Error = err.Error()
			unreadable++
		} else {
			f.Reports = append(f.Reports, harness.ParseReports(data)...)
			found += len(f.Reports)
		}
		files = append(files, f)
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(files); err != nil {
			return err
		}
	} else {
		for _, f := range files {
			switch {
			case f.Error != "":
				fmt.Fprintf(stdout, "%s: unreadable: %s\n", f.File, f.Error)
			case len(f.Reports) == 0:
				fmt.Fprintf(stdout, "%s: clean\n", f.File)
			}
			for _, r := range f.Reports {
				fmt.Fprintf(stdout, "%s:%d-%d: %s\n", f.File, r.StartLine+1, r.EndLine, r.Title)
			}
		}
	}
	switch {
	case found > 0:
		return silentFailure
	case unreadable > 0:
		return &exitError{code: 2, err: fmt.Errorf("%d of %d logs could not be read", unreadable, len(files))}
	}
	return nil
}
