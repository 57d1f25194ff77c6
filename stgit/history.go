package stgit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// HistoryRef is the git ref that records the postings of a branch: a commit (one per posting,
// each the child of the previous, like b4's cover commit) whose tree holds history.json and the
// cover letter of every version as sent (covers/VERSION.txt). Being a ref, it can be pushed and
// fetched with the repository ('git push origin "refs/ppkit/*:refs/ppkit/*"').
func HistoryRef(branch string) string { return "refs/ppkit/mail/" + branch }

// HistoryEntry records one posting that was sent.
type HistoryEntry struct {
	Version    string    `json:"version"`
	Date       time.Time `json:"date"`
	CoverID    string    `json:"cover_message_id"` // the thread's first message (the cover, if any)
	MessageIDs []string  `json:"message_ids,omitempty"`
	Subjects   []string  `json:"subjects"`
	Recipient  []string  `json:"to"`
	Cover      bool      `json:"cover,omitempty"` // the first message is a cover letter
}

// legacyHistory is where ppkit kept the history before the ref: GIT_DIR/ppkit/mail/B/history.json.
func (r *Repo) legacyHistory(ctx context.Context, branch string) (string, error) {
	dir, err := r.MailDir(ctx, branch)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "history.json"), nil
}

// History returns the postings of the branch sent so far, oldest first: from HistoryRef, or,
// in a repository ppkit has not written that ref in yet, from the old .git/ppkit history file.
func (r *Repo) History(ctx context.Context, branch string) ([]HistoryEntry, error) {
	ref := HistoryRef(branch)
	if _, err := r.git(ctx, "rev-parse", "-q", "--verify", ref+"^{commit}"); err == nil {
		out, err := r.git(ctx, "cat-file", "blob", ref+":history.json")
		if err != nil {
			return nil, fmt.Errorf("%s has no history.json: %w; delete the ref ('git update-ref -d %s') to start over", ref, err, ref)
		}
		var h []HistoryEntry
		if err := json.Unmarshal([]byte(out), &h); err != nil {
			return nil, fmt.Errorf("%s:history.json: %v; delete the ref ('git update-ref -d %s') to start over", ref, err, ref)
		}
		return h, nil
	}
	path, err := r.legacyHistory(ctx, branch)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var h []HistoryEntry
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("%s: %v; fix or delete the file", path, err)
	}
	return h, nil
}

// SentCover returns the cover letter of a posted version as it was sent ("" when it had none).
func (r *Repo) SentCover(ctx context.Context, branch, version string) string {
	out, err := r.git(ctx, "cat-file", "blob", HistoryRef(branch)+":covers/"+safeName(displayVersion(version))+".txt")
	if err != nil {
		return ""
	}
	return out
}

// recordPosting appends a posting to the history ref: a new commit on top of the previous one,
// moved with a compare-and-swap so two sends cannot lose each other's record.
func (r *Repo) recordPosting(ctx context.Context, post *Posting) error {
	h, err := r.History(ctx, post.Branch)
	if err != nil {
		return err
	}
	e := HistoryEntry{Version: post.Version, Date: time.Now().UTC(), CoverID: post.Messages[0].MessageID, Cover: post.HasCover}
	for _, m := range post.Messages {
		e.Subjects = append(e.Subjects, m.Subject)
		e.MessageIDs = append(e.MessageIDs, m.MessageID)
	}
	e.Recipient = post.Messages[0].To
	h = append(h, e)
	data, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	files := map[string]string{"history.json": string(data) + "\n"}
	if post.HasCover {
		files["covers/"+safeName(displayVersion(post.Version))+".txt"] = post.CoverText
	}
	ref := HistoryRef(post.Branch)
	parent := ""
	if out, err := r.git(ctx, "rev-parse", "-q", "--verify", ref+"^{commit}"); err == nil {
		parent = strings.TrimSpace(out)
	}
	idx, err := os.CreateTemp("", "ppkit-history-index-")
	if err != nil {
		return err
	}
	idx.Close()
	os.Remove(idx.Name()) // git creates it
	defer os.Remove(idx.Name())
	env := append([]string{}, r.Env...)
	env = append(env, "GIT_INDEX_FILE="+idx.Name())
	if a, err := mail.ParseAddress(post.Sender); err == nil {
		name := a.Name
		if name == "" {
			name = a.Address
		}
		env = append(env, "GIT_AUTHOR_NAME="+name, "GIT_AUTHOR_EMAIL="+a.Address, "GIT_COMMITTER_NAME="+name, "GIT_COMMITTER_EMAIL="+a.Address)
	}
	priv := &Repo{Dir: r.Dir, Env: env, dropEnv: r.dropEnv}
	if parent != "" {
		if _, err := priv.git(ctx, "read-tree", parent); err != nil {
			return err
		}
	}
	for path, content := range files {
		blob, err := priv.command(ctx, []byte(content), "git", "hash-object", "-w", "--stdin")
		if err != nil {
			return err
		}
		if _, err := priv.git(ctx, "update-index", "--add", "--cacheinfo", "100644,"+strings.TrimSpace(blob)+","+path); err != nil {
			return err
		}
	}
	tree, err := priv.git(ctx, "write-tree")
	if err != nil {
		return err
	}
	args := []string{"commit-tree", strings.TrimSpace(tree), "-m", fmt.Sprintf("ppkit mail: %s %s sent\n\n%s\n", post.Branch, displayVersion(post.Version), post.Messages[0].Subject)}
	if parent != "" {
		args = append(args, "-p", parent)
	}
	commit, err := priv.git(ctx, args...)
	if err != nil {
		return err
	}
	// An empty old value: the ref must not exist yet.
	if _, err := r.git(ctx, "update-ref", "-m", "ppkit mail", ref, strings.TrimSpace(commit), parent); err != nil {
		return fmt.Errorf("update %s: %w", ref, err)
	}
	return nil
}
