// Package ci answers, for one pushed ref, the questions CI asks of a kernel patch series: does
// every patch build and is it clean (series check), does the series pass the traffic procedures
// on the emulated mvneta board (tests), and did the figures move against the last stored result.
//
// Run checks the ref out in a temporary `git clone --shared` (the pushed repository's refs,
// index and work tree are never written), finds the series — a `patches/series` file in the
// tree, or the commits between a base and the ref of a kernel tree, turned into an stg stack with
// `stg uncommit` and exported with `stg export` — and writes, into an output directory,
// junit.xml, summary.md (a Markdown table for a CI page), result.json and report/ (the HTML
// report and every procedure's artifacts).
//
// Exit codes follow syzkaller's split between a verdict on the kernel and a broken bench:
// 0 pass; 1 the series failed (a patch does not build or is not clean, a procedure failed, the
// kernel did not boot, a figure regressed); 2 the run could not judge the series (git, the
// harness, QEMU or the host failed). A run that passes is stored under
// <cache>/ci/<repo-hash>/results/ as the reference for later runs; see README.md.
//
// The directory also holds ready-made pipelines that run `ppkit ci`: github-actions.yml,
// gitlab-ci.yml and post-receive (a hook for a self-hosted bare repository).
package ci
