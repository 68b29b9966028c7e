package tests

import (
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// coreParseLibrary parses the library package at the repository root.
func coreParseLibrary(t *testing.T, tests bool) (*token.FileSet, []*ast.File) {
	t.Helper()
	fset := token.NewFileSet()
	paths, err := filepath.Glob(filepath.Join("..", "*.go"))
	require.NoError(t, err)
	var files []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") != tests {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ParseComments)
		require.NoError(t, err, "parse %s", p)
		if f.Name.Name == "redlock" || (tests && f.Name.Name == "redlock_test") {
			files = append(files, f)
		}
	}
	require.NotEmpty(t, files, "no library files found in ..")
	return fset, files
}

// TestEveryExportedNameHasGodoc checks the issue's "Godoc on every exported
// name": every exported type, function, method, constant and variable of
// the root package has a doc comment (a grouped const or var may share the
// group's comment), and every doc comment of a func or type starts with its
// name.
func TestEveryExportedNameHasGodoc(t *testing.T) {
	fset, files := coreParseLibrary(t, false)
	pkg, err := doc.NewFromFiles(fset, files, "github.com/redlock-go/redlock")
	require.NoError(t, err)
	var missing []string
	checkFunc := func(f *doc.Func, recv string) {
		name := f.Name
		if recv != "" {
			name = recv + "." + f.Name
		}
		if strings.TrimSpace(f.Doc) == "" {
			missing = append(missing, "func "+name+": no doc comment")
		} else if !strings.HasPrefix(f.Doc, f.Name+" ") && !strings.HasPrefix(f.Doc, "Deprecated") {
			missing = append(missing, "func "+name+": doc does not start with "+f.Name)
		}
	}
	checkValues := func(kind string, vs []*doc.Value) {
		for _, v := range vs {
			if strings.TrimSpace(v.Doc) != "" {
				continue
			}
			for _, spec := range v.Decl.Specs {
				vspec := spec.(*ast.ValueSpec)
				if vspec.Doc != nil || vspec.Comment != nil {
					continue
				}
				for _, n := range vspec.Names {
					if n.IsExported() {
						missing = append(missing, kind+" "+n.Name+": no doc comment")
					}
				}
			}
		}
	}
	for _, f := range pkg.Funcs {
		checkFunc(f, "")
	}
	checkValues("const", pkg.Consts)
	checkValues("var", pkg.Vars)
	for _, ty := range pkg.Types {
		if strings.TrimSpace(ty.Doc) == "" {
			missing = append(missing, "type "+ty.Name+": no doc comment")
		} else if !strings.HasPrefix(ty.Doc, ty.Name+" ") && !strings.HasPrefix(ty.Doc, "A "+ty.Name+" ") && !strings.HasPrefix(ty.Doc, "An "+ty.Name+" ") {
			missing = append(missing, "type "+ty.Name+": doc does not start with its name")
		}
		for _, f := range ty.Funcs {
			checkFunc(f, "")
		}
		for _, f := range ty.Methods {
			checkFunc(f, ty.Name)
		}
		checkValues("const", ty.Consts)
		checkValues("var", ty.Vars)
	}
	sort.Strings(missing)
	require.Empty(t, missing, "exported names without a proper godoc comment")
}

// TestExampleMirrorsTheSeed checks the issue's "example_test.go mirrors the
// seed": the package example shows the seed's instance forms and every step
// of its walk-through, and Do has an example of its own.
func TestExampleMirrorsTheSeed(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "example_test.go"))
	require.NoError(t, err, "example_test.go is missing at the repository root")
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "example_test.go", src, parser.ParseComments)
	require.NoError(t, err)
	require.Equal(t, "redlock_test", f.Name.Name, "example_test.go should be in package redlock_test")

	calls := map[string]map[string]bool{} // example -> selectors used
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || !strings.HasPrefix(fn.Name.Name, "Example") {
			continue
		}
		used := map[string]bool{}
		ast.Inspect(fn, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				used[sel.Sel.Name] = true
			}
			return true
		})
		calls[fn.Name.Name] = used
	}
	seed, ok := calls["Example"]
	require.True(t, ok, "example_test.go has no package Example()")
	for _, name := range []string{"Addr", "Endpoint", "URL", "New", "IsLocked", "Lock", "Valid", "Extend", "Unlock", "Close"} {
		require.True(t, seed[name], "Example() does not show %s, a step of the seed walk-through", name)
	}
	require.Contains(t, calls, "ExampleManager_Do", "no ExampleManager_Do (the seed's `async with`)")
	require.True(t, calls["ExampleManager_Do"]["Do"], "ExampleManager_Do does not call Do")
}
