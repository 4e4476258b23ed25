package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"
)

// passwordCost is the bcrypt cost of the hashes `gateway password` makes:
// about a quarter of a second a guess on one core here, which a sign-in
// pays once and a guesser pays every time.
const passwordCost = 12

// minPasswordLength is the shortest console password `gateway password`
// hashes, in characters.
const minPasswordLength = 12

// runPassword reads a password on standard input and prints its bcrypt
// hash, for console.users[].password_hash. On a terminal it asks twice
// without echo; otherwise it reads the first line, so that
// `printf '%s\n' "$PW" | gateway password` works in scripts.
func runPassword(stdin io.Reader, stdout, stderr io.Writer) error {
	var pw []byte
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(stderr, "Password: ")
		first, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return fmt.Errorf("password: %w", err)
		}
		fmt.Fprint(stderr, "Again: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return fmt.Errorf("password: %w", err)
		}
		if !bytes.Equal(first, again) {
			return errors.New("password: the two entries differ")
		}
		pw = first
	} else {
		line, err := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("password: %w", err)
		}
		pw = bytes.TrimRight(line, "\r\n")
	}
	switch n := utf8.RuneCount(pw); {
	case n < minPasswordLength:
		return fmt.Errorf("password: %d characters, want at least %d", n, minPasswordLength)
	case len(pw) > 72:
		return fmt.Errorf("password: %d bytes, bcrypt takes at most 72", len(pw))
	}
	hash, err := bcrypt.GenerateFromPassword(pw, passwordCost)
	if err != nil {
		return fmt.Errorf("password: %w", err)
	}
	fmt.Fprintln(stdout, string(hash))
	return nil
}
