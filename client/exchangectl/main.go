// Command exchangectl drives the referral exchange from a terminal or a
// script: organisations and API keys, services and capacity, consent,
// referrals and their states, feedback, the event feed, and loading an Open
// Referral HSDS directory.
//
// Run `exchangectl --help` for the commands, each with an example.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{
		stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv,
		tty: term.IsTerminal(int(os.Stderr.Fd())),
	})
	stop()
	os.Exit(code)
}

// Exit statuses, as documented in the README.
const (
	exitOK          = 0
	exitRefused     = 1 // the exchange refused or failed the request, or an import skipped rows
	exitUsage       = 2 // bad command line: unknown command or flag, missing argument
	exitUnavailable = 3 // the exchange could not be reached
)

// env is what the command runs in; tests supply their own.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	tty            bool // stderr is a terminal: progress bars instead of lines
}

// usageError marks a mistake on the command line.
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// run runs exchangectl with args and returns the exit status.
func run(ctx context.Context, args []string, e env) int {
	a := &app{env: e}
	root := a.root()
	root.SetArgs(args)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	err := root.ExecuteContext(ctx)
	if a.client != nil {
		a.client.Close()
	}
	if err == nil {
		return exitOK
	}
	return a.fail(err)
}

// fail writes err to stderr and returns its exit status.
func (a *app) fail(err error) int {
	var ue usageError
	var se exitError
	switch {
	case errors.As(err, &se):
		return se.code
	case errors.As(err, &ue), isCobraUsage(err):
		fmt.Fprintf(a.stderr, "exchangectl: %v\nRun 'exchangectl --help' for usage.\n", err)
		return exitUsage
	}
	msg, code := describe(err)
	fmt.Fprintf(a.stderr, "exchangectl: %s\n", msg)
	return code
}

// exitError ends the command with an exit status after it has said why.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }
