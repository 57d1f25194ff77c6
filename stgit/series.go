package stgit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Series is a patch series in stg export format: a series file naming one patch file per line,
// optionally preceded by a `# This series applies on GIT commit <sha>` line.
type Series struct {
	// File is the path of the series file; patch files are relative to its directory.
	File string
	// Base is the commit named by the "applies on GIT commit" line, if any.
	Base string
	// Patches are the patch names, in order.
	Patches []string
}

var baseLine = regexp.MustCompile(`^#\s*This series applies on (?:GIT|Git) commit ([0-9a-fA-F]{7,40})\s*$`)

// ParseSeries parses a series file the way `stg import --series` reads it: `#` starts a comment,
// blank lines are skipped, and quilt's `-p1` suffix is accepted.
func ParseSeries(r io.Reader) (*Series, error) {
	s := &Series{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if m := baseLine.FindStringSubmatch(line); m != nil {
			s.Base = m[1]
			continue
		}
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		name := strings.TrimSpace(line)
		if name == "" {
			continue
		}
		if f := strings.Fields(name); len(f) > 1 {
			if len(f) == 2 && f[1] == "-p1" {
				name = f[0]
			} else {
				return nil, fmt.Errorf("line %d: %q: only one patch file per line (strip level -p1) is supported", n, name)
			}
		}
		if strings.Contains(name, "..") || filepath.IsAbs(name) {
			return nil, fmt.Errorf("line %d: patch %q must be a file next to the series file", n, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("line %d: patch %q listed twice", n, name)
		}
		seen[name] = true
		s.Patches = append(s.Patches, name)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return s, nil
}

// ReadSeries reads and validates a series file (or the "series" file of a directory, as
// `stg export` writes it): every patch it names must be readable.
func ReadSeries(path string) (*Series, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "series")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read series file: %w; give the series file of an 'stg export' (patches/series)", err)
	}
	s, err := ParseSeries(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("series file %s: %w", path, err)
	}
	s.File = path
	if len(s.Patches) == 0 {
		return nil, fmt.Errorf("series file %s lists no patches; export the stack with 'ppkit series export'", path)
	}
	for _, p := range s.Patches {
		if _, err := os.ReadFile(s.PatchPath(p)); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("series file %s names patch %s, but there is no %s: export the stack again ('ppkit series export') or remove the line", path, p, s.PatchPath(p))
			}
			return nil, fmt.Errorf("series file %s: patch %s: %w", path, p, err)
		}
	}
	return s, nil
}

// Prefix is the series cut to its first n patches (the kernel with the first n patches applied).
func (s *Series) Prefix(n int) *Series {
	cut := *s
	cut.Patches = append([]string(nil), s.Patches[:n]...)
	return &cut
}

// PatchPath returns the path of the named patch file.
func (s *Series) PatchPath(name string) string { return filepath.Join(filepath.Dir(s.File), name) }

// PatchFile is a patch file in stg export (or git format-patch) form.
type PatchFile struct {
	Subject string // first line of the description
	Author  string // "Name <email>" from the From: line, if any
	Body    string // the rest of the description, without the From: line
	Diff    string // from the first "diff --git" line on
	Files   []string
	Hunks   []Hunk
}

// Hunk is one hunk of a patch.
type Hunk struct {
	File     string
	Number   int // 1-based within its file
	OldStart int
	Header   string // the "@@ … @@" line
}

var bracketPrefix = regexp.MustCompile(`^\[[^\]]*\]\s*`)

var hunkHeader = regexp.MustCompile(`^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@`)

// ParsePatchFile splits a patch into description, author and diff and lists its hunks.
func ParsePatchFile(data []byte) (*PatchFile, error) {
	text := string(data)
	p := &PatchFile{}
	desc := text
	if i := strings.Index(text, "diff --git "); i == 0 || (i > 0 && text[i-1] == '\n') {
		desc, p.Diff = text[:i], text[i:]
	} else {
		return nil, errors.New("no 'diff --git' section")
	}
	// The description ends at the "---" line that precedes the diffstat.
	if i := strings.Index(desc, "\n---\n"); i >= 0 {
		desc = desc[:i+1]
	}
	lines := strings.Split(desc, "\n")
	var body []string
	if strings.HasPrefix(lines[0], "From ") {
		// git format-patch / mbox form: headers up to the first blank line.
		i := 1
		for ; i < len(lines) && lines[i] != ""; i++ {
			if v, ok := strings.CutPrefix(lines[i], "Subject: "); ok {
				p.Subject = strings.TrimSpace(bracketPrefix.ReplaceAllString(v, ""))
			} else if v, ok := strings.CutPrefix(lines[i], "From: "); ok {
				p.Author = strings.TrimSpace(v)
			}
		}
		body = lines[i:]
	} else {
		// stg export form: subject, blank line, optional "From: author", blank line, body.
		i := 0
		for ; i < len(lines) && strings.TrimSpace(lines[i]) == ""; i++ {
		}
		if i < len(lines) {
			p.Subject = strings.TrimSpace(lines[i])
			i++
		}
		for ; i < len(lines) && strings.TrimSpace(lines[i]) == ""; i++ {
		}
		if i < len(lines) {
			if v, ok := strings.CutPrefix(lines[i], "From: "); ok {
				p.Author = strings.TrimSpace(v)
				i++
			}
		}
		body = lines[min(i, len(lines)):]
	}
	p.Body = strings.TrimSpace(strings.Join(body, "\n"))
	if p.Subject == "" {
		return nil, errors.New("no subject line")
	}
	file := ""
	n := 0
	for _, l := range strings.Split(p.Diff, "\n") {
		if strings.HasPrefix(l, "diff --git a/") {
			f := strings.TrimPrefix(l, "diff --git a/")
			if i := strings.Index(f, " b/"); i >= 0 {
				f = f[i+3:]
			}
			file, n = f, 0
			p.Files = append(p.Files, file)
			continue
		}
		if m := hunkHeader.FindStringSubmatch(l); m != nil && file != "" {
			n++
			start, _ := strconv.Atoi(m[1])
			p.Hunks = append(p.Hunks, Hunk{File: file, Number: n, OldStart: start, Header: l})
		}
	}
	if len(p.Files) == 0 {
		return nil, errors.New("diff names no file")
	}
	return p, nil
}

// ApplyError is a patch of a series that does not apply.
type ApplyError struct {
	Patch string // patch name
	File  string // file the rejected hunk belongs to
	Hunk  *Hunk  // the rejected hunk, when git named it
	Git   string // git's own last line
}

func (e *ApplyError) Error() string {
	switch {
	case e.Hunk != nil:
		return fmt.Sprintf("patch %s does not apply: %s hunk #%d %q rejected; refresh the patch against this tree", e.Patch, e.File, e.Hunk.Number, e.Hunk.Header)
	case e.File != "":
		return fmt.Sprintf("patch %s does not apply: %s: %s; refresh the patch against this tree", e.Patch, e.File, e.Git)
	default:
		return fmt.Sprintf("patch %s does not apply: %s; refresh the patch against this tree", e.Patch, e.Git)
	}
}

var (
	patchFailed = regexp.MustCompile(`(?m)^error: patch failed: (.+):(\d+)$`)
	fileError   = regexp.MustCompile(`(?m)^error: (.+?): (does not exist in index|already exists in index|does not match index|No such file or directory)$`)
)

// CheckApplies applies the series, patch by patch, to a private index built from base (a
// commit of the repository); the work tree, index, branches and stack are not touched. It
// returns an *ApplyError naming the first patch that does not apply and its rejected hunk.
func (r *Repo) CheckApplies(ctx context.Context, base string, s *Series) error {
	_, err := r.SeriesTree(ctx, base, s)
	return err
}

// SeriesTree is CheckApplies that also writes the result: the tree object of base with the
// series applied, in the repository's object store (no ref, branch or work tree changes).
func (r *Repo) SeriesTree(ctx context.Context, base string, s *Series) (string, error) {
	priv, done, err := r.privateIndex(ctx, base)
	if err != nil {
		return "", err
	}
	defer done()
	for _, name := range s.Patches {
		path, _ := filepath.Abs(s.PatchPath(name))
		data, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("patch %s: %w", name, err)
		}
		pf, err := ParsePatchFile(data)
		if err != nil {
			return "", fmt.Errorf("patch %s (%s): %w; is it an 'stg export' patch file?", name, path, err)
		}
		if err := priv.applyCached(ctx, name, path, pf); err != nil {
			return "", err
		}
	}
	tree, err := priv.git(ctx, "write-tree")
	if err != nil {
		return "", fmt.Errorf("write the tree of %s with the series: %w", base, err)
	}
	return strings.TrimSpace(tree), nil
}

// PatchTree is the tree object of tree (a tree or commit of the repository) with one patch
// applied, given as its text: what a program applies on top of a series without making it
// part of the series (the harness's trace events). An *ApplyError names a rejected hunk.
func (r *Repo) PatchTree(ctx context.Context, tree, name string, patch []byte) (string, error) {
	pf, err := ParsePatchFile(patch)
	if err != nil {
		return "", fmt.Errorf("patch %s: %w", name, err)
	}
	f, err := os.CreateTemp("", "ppkit-patch-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(patch)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	priv, done, err := r.privateIndex(ctx, tree)
	if err != nil {
		return "", err
	}
	defer done()
	if err := priv.applyCached(ctx, name, f.Name(), pf); err != nil {
		return "", err
	}
	out, err := priv.git(ctx, "write-tree")
	if err != nil {
		return "", fmt.Errorf("write the tree of %s with %s: %w", tree, name, err)
	}
	return strings.TrimSpace(out), nil
}

// privateIndex is r working on an index file of its own that holds tree; done removes it.
func (r *Repo) privateIndex(ctx context.Context, tree string) (*Repo, func(), error) {
	idx, err := os.CreateTemp("", "ppkit-index-")
	if err != nil {
		return nil, nil, err
	}
	idx.Close()
	done := func() { os.Remove(idx.Name()) }
	priv := &Repo{Dir: r.Dir, Env: append(append([]string{}, r.Env...), "GIT_INDEX_FILE="+idx.Name())}
	if _, err := priv.git(ctx, "read-tree", tree); err != nil {
		done()
		return nil, nil, fmt.Errorf("read tree of %s: %w", tree, err)
	}
	return priv, done, nil
}

// applyCached applies the patch file at path (parsed: pf) to r's index; a patch that does not
// apply is an *ApplyError with git's rejected hunk.
func (r *Repo) applyCached(ctx context.Context, name, path string, pf *PatchFile) error {
	_, err := r.git(ctx, "apply", "--cached", "--whitespace=nowarn", path)
	if err == nil {
		return nil
	}
	var ce *CommandError
	if !errors.As(err, &ce) {
		return err
	}
	ae := &ApplyError{Patch: name, Git: (&CommandError{Args: ce.Args, Stderr: ce.Stderr, Err: ce.Err}).Error()}
	ae.Git = strings.TrimPrefix(ae.Git, "git apply: ")
	if m := patchFailed.FindStringSubmatch(ce.Stderr); m != nil {
		ae.File = m[1]
		line, _ := strconv.Atoi(m[2])
		for i := range pf.Hunks {
			if h := pf.Hunks[i]; h.File == m[1] && h.OldStart == line {
				ae.Hunk = &h
				break
			}
		}
	} else if m := fileError.FindStringSubmatch(ce.Stderr); m != nil {
		ae.File, ae.Git = m[1], m[2]
	}
	return ae
}

// Apply imports the series on top of the stack of the checked-out branch (created by
// InitStack when needed). The tree must be clean. Every patch is first applied to a private
// index, so a patch that does not apply is reported before anything changes. The import itself
// is atomic: when stg fails half-way, or ctx is cancelled (Ctrl-C), every ref, HEAD, the work
// tree, stg's stack files under GIT_DIR/patches and git config are put back as they were.
func (r *Repo) Apply(ctx context.Context, s *Series, branch string) (err error) {
	defer func() {
		// A Ctrl-C during the checks kills whichever git or stg ran: say what happened.
		if err != nil && ctx.Err() != nil && !strings.Contains(err.Error(), "interrupted") {
			err = fmt.Errorf("interrupted while checking the series; nothing changed")
		}
	}()
	if err := r.Clean(ctx); err != nil {
		return err
	}
	head, err := r.git(ctx, "rev-parse", "HEAD")
	if err != nil {
		return fmt.Errorf("%s has no commit to apply the series on: %w", r.Dir, err)
	}
	head = strings.TrimSpace(head)
	if err := r.CheckApplies(ctx, head, s); err != nil {
		return err
	}
	origBranch, err := r.Branch(ctx)
	if err != nil {
		return err
	}
	if r.HasStack(ctx) && (branch == "" || branch == origBranch) {
		ps, err := r.List(ctx)
		if err != nil {
			return err
		}
		for _, p := range ps {
			for _, name := range s.Patches {
				if p.Name == stgName(name) {
					return fmt.Errorf("the stack already has a patch %s; delete it ('stg delete %s') or apply on a new --branch", p.Name, p.Name)
				}
			}
		}
	}
	abs, err := filepath.Abs(s.File)
	if err != nil {
		return err
	}
	return r.atomically(ctx, func() error {
		if err := r.InitStack(ctx, branch); err != nil {
			return err
		}
		if _, err := r.stg(ctx, "import", "--series", abs); err != nil {
			var ce *CommandError
			if errors.As(err, &ce) {
				if m := lockName.FindStringSubmatch(ce.Stderr); m != nil {
					return fmt.Errorf("stg import --series %s: stg 0.19 cannot import patch %s (a git ref cannot end in .lock); rename it in the series file", s.File, m[1])
				}
			}
			if ctx.Err() != nil {
				return fmt.Errorf("stg import --series %s: interrupted", s.File)
			}
			return fmt.Errorf("stg import --series %s: %w", s.File, err)
		}
		return nil
	})
}

var lockName = regexp.MustCompile(`KeyError: 'refs/patches/[^']*/([^'/]+\.lock)'`)

// refDirs lists the directories under GIT_DIR/refs, parents first.
func refDirs(gitDir string) []string {
	var dirs []string
	filepath.WalkDir(filepath.Join(gitDir, "refs"), func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	return dirs
}

// refs maps every ref of the repository to the object it names.
func (r *Repo) refs(ctx context.Context) (map[string]string, error) {
	out, err := r.git(ctx, "for-each-ref", "--format=%(refname) %(objectname)")
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if ref, id, ok := strings.Cut(l, " "); ok {
			m[ref] = id
		}
	}
	return m, nil
}

// stgName is the name stg import gives a patch file of a series.
func stgName(file string) string { return strings.ReplaceAll(file, "/", "-") }

// Export writes the patches of the stack to dir in stg export format. A stack with unapplied
// patches is refused (the export would silently be a prefix of the series); ExportApplied
// writes the applied ones only. The new series is written to a temporary directory next to dir
// and swapped in with one rename, so dir is never half-written. Files in dir that the old
// series did not name (a README) are kept.
func (r *Repo) Export(ctx context.Context, dir string) error { return r.export(ctx, dir, false) }

// ExportApplied is Export of the applied patches only when some are not applied; the series
// file then ends with a "# Not exported (not applied): NAME..." comment.
func (r *Repo) ExportApplied(ctx context.Context, dir string) error {
	return r.export(ctx, dir, true)
}

// PartialStackError is a stack with unapplied patches given to Export.
type PartialStackError struct {
	Applied   int
	Unapplied []string
}

func (e *PartialStackError) Error() string {
	return fmt.Sprintf("%d of the stack's %d patches are not applied (%s); 'stg push -a' first, or export the %d applied ones with --applied",
		len(e.Unapplied), e.Applied+len(e.Unapplied), strings.Join(e.Unapplied, ", "), e.Applied)
}

func (r *Repo) export(ctx context.Context, dir string, appliedOnly bool) error {
	ps, err := r.List(ctx)
	if err != nil {
		return err
	}
	applied := 0
	var unapplied []string
	for _, p := range ps {
		if p.Applied {
			applied++
		} else {
			unapplied = append(unapplied, p.Name)
		}
	}
	if applied == 0 {
		return fmt.Errorf("no applied patch to export; 'stg push -a' first")
	}
	if len(unapplied) > 0 && !appliedOnly {
		return &PartialStackError{Applied: applied, Unapplied: unapplied}
	}
	if !appliedOnly {
		unapplied = nil
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return err
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, ".export-"+filepath.Base(dir)+"-")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer os.RemoveAll(tmp)
	if _, err := r.stg(ctx, "export", "-d", tmp); err != nil {
		return fmt.Errorf("stg export: %w", err)
	}
	if len(unapplied) > 0 {
		// The series file itself says that it is a prefix of the stack.
		f, err := os.OpenFile(filepath.Join(tmp, "series"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		_, err = fmt.Fprintf(f, "# Not exported (not applied): %s\n", strings.Join(unapplied, " "))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	if err := keepForeignFiles(dir, tmp); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.Rename(tmp, dir); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		return nil
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE); err != nil {
		return fmt.Errorf("export: swap %s into place: %w", dir, err)
	}
	return nil // the deferred RemoveAll deletes the old series, now at tmp
}

// keepForeignFiles copies the regular files of old that its series file does not name into new.
func keepForeignFiles(old, new string) error {
	entries, err := os.ReadDir(old)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	named := map[string]bool{"series": true}
	if f, err := os.Open(filepath.Join(old, "series")); err == nil {
		s, perr := ParseSeries(f)
		f.Close()
		if perr == nil {
			for _, p := range s.Patches {
				named[p] = true
			}
		}
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || named[e.Name()] {
			continue
		}
		if _, err := os.Stat(filepath.Join(new, e.Name())); err == nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(old, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(new, e.Name()), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// DesignFile is the file beside a series' `series` file that says which design the series
// implements, in the name ppkit's reference model gives it (gomodel's variants: "series" for
// the head-only V1, "upstream" for 5.14's design): the first line that is neither blank nor a
// # comment. ppkit's probes and model follow it; it is never guessed from the patches.
const DesignFile = "model-variant"

// ReadDesign reads the design a series directory declares in its DesignFile.
func ReadDesign(dir string) (string, error) {
	path := filepath.Join(dir, DesignFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("series %s does not say its design: write the model variant it implements (series: V1, head only; upstream: V2) in %s", dir, path)
	}
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			return line, nil
		}
	}
	return "", fmt.Errorf("%s names no design: write the model variant the series implements (series or upstream) on a line of its own", path)
}
