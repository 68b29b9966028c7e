package main

import (
	"strings"
	"testing"
)

func TestBadInputIsAUsageErrorWithAClearMessage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{nil, "Usage:"},
		{[]string{"frobnicate"}, `unknown subcommand "frobnicate"`},
		{[]string{"exec"}, "missing RESOURCE"},
		{[]string{"exec", "job"}, "missing CMD"},
		{[]string{"exec", "--bogus", "job", "true"}, "flag provided but not defined: -bogus"},
		{[]string{"exec", "--ttl", "banana", "job", "true"}, `invalid value "banana" for flag -ttl`},
		{[]string{"exec", "--ttl", "0s", "job", "true"}, "--ttl must be positive"},
		{[]string{"exec", "--instances", "localhost:notaport", "job", "true"}, "--instances: instance 1"},
		{[]string{"exec", "--instances", "redis://:@", "job", "true"}, "missing host"},
		{[]string{"exec", "--instances", "ftp://h:1", "job", "true"}, "unknown scheme"},
		{[]string{"status"}, "missing RESOURCE"},
		{[]string{"status", "a", "b"}, `unexpected argument "b"`},
		{[]string{"status", "--instances", "127.0.0.1:0", "job"}, "port must be a number from 1 to 65535"},
		{[]string{"status", "--instances", "redis+sentinel://h1:26379,h2:26379/0", "job"}, "master"},
		{[]string{"scripts", "extra"}, `unexpected argument "extra"`},
		{[]string{"scripts", "--load", "nohost"}, "--load: instance 1"},
		{[]string{"demo", "--workers", "0"}, "--workers must be between"},
		{[]string{"demo", "--ttl", "10ms"}, "too short"},
		{[]string{"help", "nope"}, `unknown subcommand "nope"`},
	} {
		run := runCLI(t, nil, tc.args...)
		run.expectCode(t, exitUsage, "bad input")
		if !strings.Contains(run.stderr.String(), tc.want) {
			t.Errorf("redlock %s: stderr lacks %q:\n%s", strings.Join(tc.args, " "), tc.want, &run.stderr)
		}
		if run.stdout.Len() != 0 {
			t.Errorf("redlock %s: a usage error printed to stdout:\n%s", strings.Join(tc.args, " "), &run.stdout)
		}
	}
}

func TestBadInstanceErrorsNeverShowThePassword(t *testing.T) {
	for _, spec := range []string{
		"redis://user:s3cret@:6379",
		"redis://user:s3cret@host:port",
		"rediss://:s3cret@h:1/x",
		"redis+sentinel://:s3cret@h1:26379/0",
	} {
		run := runCLI(t, nil, "exec", "--instances", spec, "job", "--", "true")
		run.expectCode(t, exitUsage, "invalid spec")
		if strings.Contains(run.stderr.String(), "s3cret") {
			t.Errorf("the error for %s shows the password:\n%s", spec, &run.stderr)
		}
	}
}

func TestEverySubcommandHasHelpWithExamples(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"exec", "--help"}, {"status", "-h"}, {"scripts", "--help"}, {"demo", "--help"}, {"help", "exec"}} {
		run := runCLI(t, nil, args...)
		run.expectCode(t, 0, "help was asked for")
		want := "Examples:"
		if len(args) == 1 {
			want = "Subcommands:"
		}
		if !strings.Contains(run.stdout.String(), want) {
			t.Errorf("redlock %s: stdout lacks %q:\n%s", strings.Join(args, " "), want, &run.stdout)
		}
	}
	// Help on a subcommand lists its flags, e.g. exec's --grace.
	if run := runCLI(t, nil, "exec", "--help"); !strings.Contains(run.stdout.String(), "--grace duration") {
		t.Errorf("exec --help lacks --grace:\n%s", &run.stdout)
	}
}

func TestSplitSpecsKeepsSentinelHostLists(t *testing.T) {
	got := splitSpecs("a:1, redis+sentinel://h1:26379,h2:26379/0?master=m,b:2 redis://c:3")
	want := []string{"a:1", "redis+sentinel://h1:26379,h2:26379/0?master=m", "b:2", "redis://c:3"}
	if strings.Join(got, " | ") != strings.Join(want, " | ") {
		t.Fatalf("splitSpecs = %q, want %q", got, want)
	}
}
