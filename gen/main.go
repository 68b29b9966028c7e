// Command gen turns the Lua scripts in lua/*.lua into scripts_gen.go.
//
// It is run by `go generate ./...` from the module root (see generate.go).
// Each script must open with a header that gen parses strictly:
//
//	-- NAME: one-line summary          (NAME is the file name without .lua)
//	-- KEYS[1] name: what the key is   (fixed keys, numbered from 1), or
//	-- KEYS[1..n] name: what they are  (any number of keys; the only KEYS line)
//	-- ARGV[1] name type: meaning      (type is string or int; numbered from 1)
//	-- returns: what comes back        (one line per possible reply, at least one)
//
// The header ends at the first line that does not start with "--". A
// malformed header fails with file:line.
//
// Per script, gen emits the source, its SHA1 and a luaScript value, plus
// two functions that are the only code laying out or reading the script's
// EVALSHA traffic:
//
//	func NAMEArgs(<one string per KEYS line, or keys []string>, <ARGV as string or int64>) []interface{}
//	func NAMEReply(reply interface{}, err error) ([]interface{}, error) // replies written {a, b}
//	func NAMEReply(reply interface{}, err error) (int64, error)         // any other reply
//
// Every array reply of a script must have the same number of elements; the
// decoder accepts exactly that many.
//
// The output is deterministic: scripts are sorted by name, nothing depends on
// time or on absolute paths, and the file is formatted with go/format.
package main

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"flag"
	"fmt"
	"go/format"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
)

// outputName is the generated file, relative to the module root.
const outputName = "scripts_gen.go"

func main() {
	root := flag.String("root", ".", "module root holding lua/ and "+outputName)
	check := flag.Bool("check", false, "only check that "+outputName+" is up to date")
	flag.Parse()
	if err := doMain(*root, !*check); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

// doMain generates the file for the module at root. With write it writes the
// file when it differs; without, it returns an error when the file is stale.
func doMain(root string, write bool) error {
	want, err := generate(root)
	if err != nil {
		return err
	}
	path := filepath.Join(root, outputName)
	got, err := os.ReadFile(path)
	if err == nil && bytes.Equal(got, want) {
		return nil
	}
	if !write {
		return fmt.Errorf("%s is stale; run go generate ./...", outputName)
	}
	return os.WriteFile(path, want, 0o644)
}

// param is one KEYS or ARGV line of a header.
type param struct {
	Index string // "1", "2", "1..n" or, after ARGV[1..n], "n+1", "n+2"
	Name  string
	Type  string // "string" or "int"; empty for keys
	Doc   string
	List  bool // ARGV[1..n]: one value per key, a []string or []int64 in Go
}

// script is one parsed Lua file.
type script struct {
	Name     string // file name without .lua
	File     string // "lua/NAME.lua", slash-separated
	Summary  string
	Source   string
	SHA1     string
	Variadic bool // KEYS[1..n]
	Keys     []param
	Args     []param
	Returns  []string
	Array    bool // replies are {..} arrays
	Arity    int  // elements of every array reply; 0 for integer replies; -1: one per key ({r_1, ..., r_n})
	ListArgs bool // the first ARGV line is ARGV[1..n]
}

// generate reads root/lua/*.lua and returns the formatted Go file.
func generate(root string) ([]byte, error) {
	files, err := filepath.Glob(filepath.Join(root, "lua", "*.lua"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no lua/*.lua files under %s", root)
	}
	sort.Strings(files)
	var scripts []script
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		s, err := parse("lua/"+filepath.Base(f), src)
		if err != nil {
			return nil, err
		}
		scripts = append(scripts, s)
	}
	var buf bytes.Buffer
	if err := fileTemplate.Execute(&buf, scripts); err != nil {
		return nil, err
	}
	out, err := format.Source(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("formatting generated code: %v", err)
	}
	return out, nil
}

var (
	nameRe    = regexp.MustCompile(`^-- ([a-z][a-z0-9_]*): (\S.*)$`)
	keysRe    = regexp.MustCompile(`^-- KEYS\[(\d+|1\.\.n)\] ([a-z][a-z0-9_]*): (\S.*)$`)
	argvRe    = regexp.MustCompile(`^-- ARGV\[(\d+|1\.\.n|n\+\d+)\] ([a-z][a-z0-9_]*) (string|int): (\S.*)$`)
	returnsRe = regexp.MustCompile(`^-- returns: (\S.*)$`)
	perKeyRe  = regexp.MustCompile(`^\{([a-z][a-z0-9]*)_1, \.\.\., ([a-z][a-z0-9]*)_n\}$`)
	// reserved holds the Go keywords and the builtins the generated
	// functions call (ctx and c stay reserved for callers).
	reserved = map[string]bool{"break": true, "case": true, "chan": true, "const": true, "continue": true,
		"default": true, "defer": true, "else": true, "fallthrough": true, "for": true, "func": true,
		"go": true, "goto": true, "if": true, "import": true, "interface": true, "map": true,
		"package": true, "range": true, "return": true, "select": true, "struct": true, "switch": true,
		"type": true, "var": true, "ctx": true, "c": true, "append": true, "len": true, "make": true}
	// variadicLocals are the local variables of a KEYS[1..n] script's
	// builder; a builder for fixed keys has none.
	variadicLocals = map[string]bool{"args": true, "k": true}
)

// parse checks the header of one script and returns its description.
// Errors name the file and the offending line.
func parse(file string, src []byte) (script, error) {
	text := string(src)
	s := script{File: file, Source: text, Name: strings.TrimSuffix(filepath.Base(file), ".lua")}
	sum := sha1.Sum(src)
	s.SHA1 = hex.EncodeToString(sum[:])
	if strings.Contains(text, "\r") {
		return s, fmt.Errorf("%s:1: carriage return in source; the digest must not depend on checkout (see .gitattributes)", file)
	}
	lines := strings.Split(text, "\n")
	fail := func(n int, format string, a ...interface{}) (script, error) {
		return s, fmt.Errorf("%s:%d: %s", file, n, fmt.Sprintf(format, a...))
	}
	n := 0
	for n < len(lines) && strings.HasPrefix(lines[n], "--") {
		n++
	}
	header := lines[:n]
	if len(header) == 0 {
		return fail(1, "missing header: the first line must be \"-- %s: summary\"", s.Name)
	}
	m := nameRe.FindStringSubmatch(header[0])
	if m == nil {
		return fail(1, "want \"-- %s: summary\", got %q", s.Name, header[0])
	}
	if m[1] != s.Name {
		return fail(1, "header names %q but the file is %s.lua", m[1], s.Name)
	}
	s.Summary = m[2]
	seen := map[string]int{} // Go parameter name -> header line
	firstReply := 0          // header line of the first returns line
	// badName says what is wrong with a parameter name once it is in Go:
	// it clashes with an earlier one, a reserved name, a local of the
	// builder or the script's luaScript variable. It returns "" when good.
	badName := func(name string) string {
		goName := camel(name)
		if prev, dup := seen[goName]; dup {
			return fmt.Sprintf("parameter name %q is already used on line %d", name, prev)
		}
		if reserved[goName] || (s.Variadic && variadicLocals[goName]) || goName == camel(s.Name)+"Script" {
			return fmt.Sprintf("parameter name %q is reserved in the generated Go code", name)
		}
		return ""
	}
	for i, line := range header[1:] {
		ln := i + 2
		switch {
		case strings.HasPrefix(line, "-- KEYS["):
			m := keysRe.FindStringSubmatch(line)
			if m == nil {
				return fail(ln, "want \"-- KEYS[i] name: doc\" or \"-- KEYS[1..n] name: doc\", got %q", line)
			}
			if len(s.Args) > 0 || len(s.Returns) > 0 {
				return fail(ln, "KEYS lines must come before ARGV and returns lines")
			}
			if s.Variadic || (m[1] == "1..n" && len(s.Keys) > 0) {
				return fail(ln, "KEYS[1..n] must be the only KEYS line")
			}
			if m[1] == "1..n" {
				s.Variadic = true
			} else if m[1] != strconv.Itoa(len(s.Keys)+1) {
				return fail(ln, "want KEYS[%d], got KEYS[%s]", len(s.Keys)+1, m[1])
			}
			if msg := badName(m[2]); msg != "" {
				return fail(ln, "%s", msg)
			}
			seen[camel(m[2])] = ln
			s.Keys = append(s.Keys, param{Index: m[1], Name: m[2], Doc: m[3]})
		case strings.HasPrefix(line, "-- ARGV["):
			m := argvRe.FindStringSubmatch(line)
			if m == nil {
				return fail(ln, "want \"-- ARGV[i] name string|int: doc\", got %q", line)
			}
			if len(s.Returns) > 0 {
				return fail(ln, "ARGV lines must come before returns lines")
			}
			list := m[1] == "1..n"
			switch {
			case list && (!s.Variadic || len(s.Args) > 0):
				return fail(ln, "ARGV[1..n] must be the first ARGV line of a KEYS[1..n] script")
			case list:
				s.ListArgs = true
			case s.ListArgs && m[1] != fmt.Sprintf("n+%d", len(s.Args)):
				return fail(ln, "want ARGV[n+%d], got ARGV[%s]", len(s.Args), m[1])
			case !s.ListArgs && m[1] != strconv.Itoa(len(s.Args)+1):
				return fail(ln, "want ARGV[%d], got ARGV[%s]", len(s.Args)+1, m[1])
			}
			if msg := badName(m[2]); msg != "" {
				return fail(ln, "%s", msg)
			}
			seen[camel(m[2])] = ln
			s.Args = append(s.Args, param{Index: m[1], Name: m[2], Type: m[3], Doc: m[4], List: list})
		case strings.HasPrefix(line, "-- returns"):
			m := returnsRe.FindStringSubmatch(line)
			if m == nil {
				return fail(ln, "want \"-- returns: reply\", got %q", line)
			}
			array := strings.HasPrefix(m[1], "{")
			if len(s.Returns) > 0 && array != s.Array {
				return fail(ln, "replies mix arrays {..} and integers")
			}
			if array {
				arity, err := arrayArity(m[1])
				if err != nil {
					return fail(ln, "%v in %q", err, m[1])
				}
				if arity < 0 && !s.Variadic {
					return fail(ln, "a reply of one element per key ({r_1, ..., r_n}) needs KEYS[1..n]")
				}
				if len(s.Returns) > 0 && arity != s.Arity {
					return fail(ln, "reply has %d elements but the reply on line %d has %d; every array reply must have the same number", arity, firstReply, s.Arity)
				}
				s.Arity = arity
			}
			if len(s.Returns) == 0 {
				firstReply = ln
			}
			s.Array = array
			s.Returns = append(s.Returns, m[1])
		default:
			return fail(ln, "unknown header line %q (want KEYS, ARGV or returns)", line)
		}
	}
	if len(s.Keys) == 0 {
		return fail(len(header)+1, "header declares no KEYS")
	}
	if len(s.Returns) == 0 {
		return fail(len(header)+1, "header declares no returns")
	}
	return s, nil
}

// arrayArity counts the elements of a reply written "{a, b} doc"; a reply
// written "{r_1, ..., r_n} doc" has one element per key: -1.
func arrayArity(reply string) (int, error) {
	end := strings.Index(reply, "}")
	if end < 0 {
		return 0, fmt.Errorf("unclosed {")
	}
	if strings.Contains(reply[1:end], "{") {
		return 0, fmt.Errorf("nested array")
	}
	if perKeyRe.MatchString(reply[:end+1]) {
		return -1, nil
	}
	elems := strings.Split(reply[1:end], ",")
	for _, e := range elems {
		if strings.TrimSpace(e) == "" {
			return 0, fmt.Errorf("empty array element")
		}
	}
	return len(elems), nil
}

var fileTemplate = template.Must(template.New("file").Funcs(template.FuncMap{
	"lit":    literal,
	"export": func(s string) string { return strings.ToUpper(s[:1]) + s[1:] },
	"camel":  camel,
	"gotype": func(t string) string { return map[string]string{"string": "string", "int": "int64"}[t] },
	"quote":  strconv.Quote,
}).Parse(`// Code generated by go run ./gen; DO NOT EDIT.
// source: {{range $i, $s := .}}{{if $i}}, {{end}}{{$s.File}}{{end}}

package redlock

import (
	"fmt"

	"github.com/gomodule/redigo/redis"
)
{{range .}}{{$name := camel .Name}}
// {{$name}}Source is {{.File}}, byte for byte.
const {{$name}}Source = {{lit .Source}}

// {{$name}}SHA1 is the SHA1 digest of {{$name}}Source, as EVALSHA wants it.
const {{$name}}SHA1 = "{{.SHA1}}"

// {{$name}}Script describes {{.File}}.
var {{$name}}Script = luaScript{name: "{{.Name}}", source: {{$name}}Source, sha1: {{$name}}SHA1, sha1Arg: {{$name}}SHA1, keyCount: {{if .Variadic}}-1{{else}}{{len .Keys}}{{end}}}

// {{$name}}Args returns EVALSHA's arguments for {{.File}}: {{.Summary}}
// They are the digest, the key count, then in this order:
{{- range .Keys}}
//   - KEYS[{{.Index}}] {{.Name}}: {{.Doc}}
{{- end}}
{{- range .Args}}
//   - ARGV[{{.Index}}] {{.Name}}: {{.Doc}}
{{- end}}
{{- if .Variadic}}
//
// The caller checks that {{camel (index .Keys 0).Name}} is not empty.
{{- end}}
{{- if .ListArgs}} Each ARGV[1..n] list has one value per key, in the keys' order.
{{- end}}
{{- if .Variadic}}{{$keys := camel (index .Keys 0).Name}}
func {{$name}}Args({{$keys}} []string{{range .Args}}, {{camel .Name}} {{if .List}}[]{{end}}{{gotype .Type}}{{end}}) []interface{} {
	{{- if .ListArgs}}
	args := make([]interface{}, 0, 2+2*len({{$keys}})+{{len .Args}}-1)
	{{- else}}
	args := make([]interface{}, 0, 2+len({{$keys}})+{{len .Args}})
	{{- end}}
	args = append(args, {{$name}}Script.sha1Arg, len({{$keys}}))
	for _, k := range {{$keys}} {
		args = append(args, k)
	}
	{{- range .Args}}{{if .List}}
	for _, v := range {{camel .Name}} {
		args = append(args, v)
	}
	{{- end}}{{end}}
	{{- if .ListArgs}}
	return append(args{{range .Args}}{{if not .List}}, {{camel .Name}}{{end}}{{end}})
	{{- else if .Args}}
	return append(args{{range .Args}}, {{camel .Name}}{{end}})
	{{- else}}
	return args
	{{- end}}
}
{{- else}}
func {{$name}}Args({{range $i, $k := .Keys}}{{if $i}}, {{end}}{{camel $k.Name}} string{{end}}{{range .Args}}, {{camel .Name}} {{gotype .Type}}{{end}}) []interface{} {
	return []interface{}{ {{- $name}}Script.sha1Arg, {{len .Keys}}{{range .Keys}}, {{camel .Name}}{{end}}{{range .Args}}, {{camel .Name}}{{end -}} }
}
{{- end}}

// {{$name}}Reply decodes a reply of {{.File}}{{if lt .Arity 0}}, an array of one element per key{{else if .Array}}, an array of {{.Arity}} elements{{else}}, an integer{{end}}:
{{- range .Returns}}
//   - {{.}}
{{- end}}
//
// A non-nil err (a transport error, or an error reply such as NOSCRIPT) is
// returned as it is, and so is a redis.Error given as reply; any other reply
// that is not {{if lt .Arity 0}}an array of keys elements{{else if .Array}}an array of {{.Arity}} elements{{else}}an integer{{end}} is an error.
{{- if lt .Arity 0}}
func {{$name}}Reply(reply interface{}, err error, keys int) ([]interface{}, error) {
	if err != nil {
		return nil, err
	}
	switch reply := reply.(type) {
	case []interface{}:
		if len(reply) != keys {
			return nil, fmt.Errorf("redlock: {{.Name}}: unexpected reply of %d elements for %d keys", len(reply), keys)
		}
		return reply, nil
	case redis.Error:
		return nil, reply
	default:
		return nil, fmt.Errorf("redlock: {{.Name}}: unexpected reply type %T", reply)
	}
}
{{- else if .Array}}
func {{$name}}Reply(reply interface{}, err error) ([]interface{}, error) {
	if err != nil {
		return nil, err
	}
	switch reply := reply.(type) {
	case []interface{}:
		if len(reply) != {{.Arity}} {
			return nil, fmt.Errorf("redlock: {{.Name}}: unexpected reply of %d elements", len(reply))
		}
		return reply, nil
	case redis.Error:
		return nil, reply
	default:
		return nil, fmt.Errorf("redlock: {{.Name}}: unexpected reply type %T", reply)
	}
}
{{- else}}
func {{$name}}Reply(reply interface{}, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	if e, ok := reply.(redis.Error); ok {
		return 0, e
	}
	n, err := redis.Int64(reply, nil)
	if err != nil {
		return 0, fmt.Errorf("redlock: {{.Name}}: unexpected reply: %w", err)
	}
	return n, nil
}
{{- end}}
{{end}}
// scriptRegistry lists every script in lua/, sorted by name; see Scripts.
var scriptRegistry = []Script{
{{- range .}}
	{
		Name:     {{quote .Name}},
		File:     {{quote .File}},
		Summary:  {{quote .Summary}},
		Source:   {{camel .Name}}Source,
		SHA1:     {{camel .Name}}SHA1,
		KeyCount: {{if .Variadic}}-1{{else}}{{len .Keys}}{{end}},
		Keys: []string{ {{- range .Keys}}{{quote (printf "KEYS[%s] %s: %s" .Index .Name .Doc)}}, {{end -}} },
		Args: []string{ {{- range .Args}}{{quote (printf "ARGV[%s] %s %s: %s" .Index .Name .Type .Doc)}}, {{end -}} },
		Returns: []string{ {{- range .Returns}}{{quote .}}, {{end -}} },
	},
{{- end}}
}
`))

// literal renders source as a raw string, or a quoted one if it has a backtick.
func literal(src string) string {
	if strings.Contains(src, "`") {
		return strconv.Quote(src)
	}
	return "`" + src + "`"
}

// camel turns ttl_ms into ttlMS-style Go names (ttlMs, for simplicity).
func camel(name string) string {
	parts := strings.Split(name, "_")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}
