package main

import (
	"bufio"
	"bytes"
	"go/build"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// The repository explains itself: every reference in its code, docs and
// configs resolves inside a clone. TestReferences fails on a path outside
// it (a sibling folder of the checkout, say), a file that does not exist, a Markdown link or
// anchor that leads nowhere, and a "§N" of docs/protocol.md or
// docs/decisions.md without its section.

var (
	// A path into the repository named in text: it starts with one of its
	// top-level folders.
	repoPath = regexp.MustCompile("(?:^|[\\s`'\"(\\[])((?:docs|deploy|model|service|handler|client|crypto|config|wire|tools|banksim|faulttest|gateway|\\.ci)/[A-Za-z0-9_./*-]*[A-Za-z0-9_*])")
	// A Markdown file named without a folder.
	bareMarkdown = regexp.MustCompile(`(?:^|[^A-Za-z0-9_./-])([A-Za-z0-9_-]+\.md)\b`)
	// A section of the protocol or the decisions: docs/decisions.md §6.
	section = regexp.MustCompile(`docs/(protocol|decisions)\.md §([0-9]+(?:\.[0-9]+)*)`)
	// A Markdown link's target.
	mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	// A Go import line: its path is a package, not a file of ours.
	goImport = regexp.MustCompile(`^\s*(?:import\s+)?(?:[A-Za-z_.]+\s+)?"[^"]+"\s*$`)
	// The folder beside the checkout that held the contract while the
	// repository did not: a clone has no such thing.
	outside = "../" + "shared"
)

func TestReferences(t *testing.T) {
	files := repoFiles(t)
	exists := map[string]bool{}
	names := map[string]bool{}
	for _, f := range files {
		exists[f] = true
		names[path.Base(f)] = true
		for d := path.Dir(f); d != "."; d = path.Dir(d) {
			exists[d] = true
		}
	}
	headings := map[string][]string{}
	for _, doc := range []string{"docs/protocol.md", "docs/decisions.md"} {
		headings[doc] = markdownHeadings(t, doc)
	}
	for _, f := range files {
		if !textFile(f) {
			continue
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			where := f + ":" + strconv.Itoa(n)
			if strings.Contains(line, outside) {
				t.Errorf("%s points outside the repository: %s", where, strings.TrimSpace(line))
			}
			if strings.HasSuffix(f, ".go") && goImport.MatchString(line) {
				continue
			}
			for _, m := range repoPath.FindAllStringSubmatch(line, -1) {
				p := strings.TrimSuffix(strings.TrimSuffix(m[1], "."), "/")
				if !pathExists(p, exists, files) && !stdlib(p) {
					t.Errorf("%s names %s, which is not in the repository", where, p)
				}
			}
			for _, m := range bareMarkdown.FindAllStringSubmatch(line, -1) {
				if !names[m[1]] {
					t.Errorf("%s names %s, which is not in the repository", where, m[1])
				}
			}
			for _, m := range section.FindAllStringSubmatch(line, -1) {
				doc := "docs/" + m[1] + ".md"
				if !hasSection(headings[doc], m[2]) {
					t.Errorf("%s refers to %s §%s, which has no such section", where, doc, m[2])
				}
			}
			if strings.HasSuffix(f, ".md") {
				for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
					checkLink(t, where, f, m[1], exists)
				}
			}
		}
	}
}

// repoFiles lists the files of the checkout that git tracks or would
// (untracked, not ignored): what a clone has.
func repoFiles(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("git", "ls-files", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Skipf("git ls-files: %v (the references are checked in a git checkout)", err)
	}
	var files []string
	for _, f := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if _, err := os.Stat(f); err == nil { // deleted in the working tree
			files = append(files, f)
		}
	}
	return files
}

func textFile(f string) bool {
	switch path.Ext(f) {
	case ".go", ".md", ".yaml", ".yml", ".sql", ".sh", ".json", ".tmpl", ".html", ".css":
		return true
	}
	return path.Base(f) == "Dockerfile" || f == ".ci/run"
}

// stdlib reports whether p is a package of Go's standard library
// (crypto/aes beside our crypto/).
func stdlib(p string) bool {
	pkg, err := build.Default.Import(p, "", build.FindOnly)
	return err == nil && pkg.Goroot
}

func pathExists(p string, exists map[string]bool, files []string) bool {
	if strings.ContainsAny(p, "*") {
		for _, f := range files {
			if ok, _ := path.Match(p, f); ok {
				return true
			}
		}
		return false
	}
	return exists[p]
}

// checkLink resolves a Markdown link of file f: a relative path must exist,
// and an anchor must be one of the target's headings.
func checkLink(t *testing.T, where, f, target string, exists map[string]bool) {
	t.Helper()
	if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
		return
	}
	file, anchor, _ := strings.Cut(target, "#")
	dest := f
	if file != "" {
		dest = path.Clean(path.Join(path.Dir(f), file))
		if strings.HasPrefix(dest, "../") || !exists[strings.TrimSuffix(dest, "/")] {
			t.Errorf("%s links to %s, which is not in the repository", where, target)
			return
		}
	}
	if anchor == "" || !strings.HasSuffix(dest, ".md") {
		return
	}
	for _, h := range markdownHeadings(t, dest) {
		if slug(h) == anchor {
			return
		}
	}
	t.Errorf("%s links to #%s, which is no heading of %s", where, anchor, dest)
}

var headingCache = map[string][]string{}

// markdownHeadings returns the headings of a Markdown file, outside code blocks.
func markdownHeadings(t *testing.T, f string) []string {
	t.Helper()
	if h, ok := headingCache[f]; ok {
		return h
	}
	raw, err := os.ReadFile(filepath.FromSlash(f))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fence := false
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "```") {
			fence = !fence
			continue
		}
		if !fence && strings.HasPrefix(line, "#") {
			out = append(out, strings.TrimSpace(strings.TrimLeft(line, "#")))
		}
	}
	headingCache[f] = out
	return out
}

// hasSection reports whether a heading is numbered n ("6." or "3.2.4 ...").
func hasSection(headings []string, n string) bool {
	for _, h := range headings {
		if num, _, _ := strings.Cut(h, " "); strings.TrimSuffix(num, ".") == n {
			return true
		}
	}
	return false
}

// slug is GitHub's anchor of a heading: lower case, punctuation dropped,
// spaces turned into hyphens.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}
