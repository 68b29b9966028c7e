package harness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	dc "github.com/ory/dockertest/v3/docker"
)

// The harness image is built here, never pulled (there may be no registry
// at all): FROM scratch, holding the host's redis-server and redis-sentinel
// at their host paths (symlinks kept: Redis picks its mode from argv[0]),
// and exactly the shared libraries and dynamic loader that ldd lists for
// them, at the paths ldd names. It is tagged redlock-harness-redis:VERSION
// (the host's Redis version) and labelled with a digest of its files; an
// image of that tag and digest is reused, so it is built once per machine
// and Redis build, and at most once per test binary.
const (
	dockerImageRepo   = "redlock-harness-redis"
	dockerDigestLabel = "org.redlock-harness.digest" // not dockerLabel: containers inherit image labels
)

// imageBinaries are the paths of the Redis executables, the same on the
// host and in the image.
type imageBinaries struct {
	server, sentinel string
}

// imageEntry is one path of the image: a symlink to link, or (link "") a
// copy of the host file at path.
type imageEntry struct {
	path, link string
	mode       os.FileMode
}

// ensureImage returns the tag of the harness image, building it when no
// image of that tag holds the same files.
func (b *dockerBackend) ensureImage() (string, error) {
	var err error
	for _, bin := range []struct {
		name string
		dst  *string
	}{{"redis-server", &b.bins.server}, {"redis-sentinel", &b.bins.sentinel}} {
		p, err := lookupBinary(bin.name)
		if err != nil {
			return "", fmt.Errorf("harness: the docker backend builds its image from the host's Redis: %w", err)
		}
		if *bin.dst, err = filepath.Abs(p); err != nil {
			return "", err
		}
	}
	version, err := redisVersion(b.bins.server)
	if err != nil {
		return "", err
	}
	entries, err := imageEntries(b.bins.server, b.bins.sentinel)
	if err != nil {
		return "", err
	}
	digest, err := imageDigest(version, entries)
	if err != nil {
		return "", err
	}
	tag := dockerImageRepo + ":" + version
	if img, err := b.client.InspectImage(tag); err == nil && img.Config != nil && img.Config.Labels[dockerDigestLabel] == digest {
		return tag, nil
	}

	dir, err := os.MkdirTemp("", "redlock-harness-image-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	if err := writeImageContext(dir, entries, version, digest); err != nil {
		return "", fmt.Errorf("harness: image build context: %w", err)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), dockerAPITimeout)
	defer cancel()
	err = b.client.BuildImage(dc.BuildImageOptions{
		Name:                tag,
		ContextDir:          dir,
		Dockerfile:          "Dockerfile",
		Pull:                false, // FROM scratch: there is nothing to pull, and no registry to pull from
		RmTmpContainer:      true,
		ForceRmTmpContainer: true,
		OutputStream:        &out,
		Context:             ctx,
	})
	if err != nil {
		return "", fmt.Errorf("harness: docker build %s: %w\n%s", tag, err, tailString(out.String(), 20))
	}
	img, err := b.client.InspectImage(tag)
	if err != nil || img.Config == nil || img.Config.Labels[dockerDigestLabel] != digest {
		return "", fmt.Errorf("harness: docker build %s did not produce the image (inspect: %v)\n%s", tag, err, tailString(out.String(), 20))
	}
	return tag, nil
}

// redisVersion returns the version redis-server reports, e.g. "7.0.15".
func redisVersion(server string) (string, error) {
	out, err := exec.Command(server, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("harness: %s --version: %w", server, err)
	}
	m := regexp.MustCompile(`v=([0-9A-Za-z._-]+)`).FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("harness: %s --version printed no version: %q", server, out)
	}
	return string(m[1]), nil
}

// imageEntries lists every path the image holds: each binary and each path
// ldd lists for it, with every symlink on the way to a regular file.
func imageEntries(bins ...string) ([]imageEntry, error) {
	seen := map[string]bool{}
	var out []imageEntry
	add := func(p string) error {
		for depth := 0; depth < 16; depth++ {
			if seen[p] {
				return nil
			}
			seen[p] = true
			fi, err := os.Lstat(p)
			if err != nil {
				return fmt.Errorf("harness: image file: %w", err)
			}
			if fi.Mode()&os.ModeSymlink != 0 {
				target, err := os.Readlink(p)
				if err != nil {
					return fmt.Errorf("harness: image file: %w", err)
				}
				out = append(out, imageEntry{path: p, link: target})
				if !filepath.IsAbs(target) {
					target = filepath.Join(filepath.Dir(p), target)
				}
				p = target
				continue
			}
			if !fi.Mode().IsRegular() {
				return fmt.Errorf("harness: image file %s is not a regular file (%v)", p, fi.Mode())
			}
			out = append(out, imageEntry{path: p, mode: fi.Mode().Perm()})
			return nil
		}
		return fmt.Errorf("harness: image file %s: too many symlinks", p)
	}
	for _, bin := range bins {
		if err := add(bin); err != nil {
			return nil, err
		}
		libs, err := lddPaths(bin)
		if err != nil {
			return nil, err
		}
		for _, lib := range libs {
			if err := add(lib); err != nil {
				return nil, err
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out, nil
}

// lddPaths returns the shared libraries and the loader that ldd lists for
// bin, at the paths it names them (linux-vdso has none: the kernel maps
// it).
func lddPaths(bin string) ([]string, error) {
	ldd, err := exec.LookPath("ldd")
	if err != nil {
		return nil, errors.New(`harness: ldd not found; the docker backend needs it to find the libraries of redis-server: install it with "apt-get install -y libc-bin"`)
	}
	out, err := exec.Command(ldd, bin).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("harness: ldd %s: %v\n%s", bin, err, out)
	}
	var paths []string
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("harness: ldd %s: %s", bin, line)
		}
		if _, after, ok := strings.Cut(line, "=>"); ok {
			line = strings.TrimSpace(after)
		}
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "/") {
			paths = append(paths, f[0])
		}
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("harness: ldd %s listed no library (a static binary needs none, but Debian's is dynamic):\n%s", bin, out)
	}
	return paths, nil
}

// imageDigest hashes the Redis version and every entry: link targets and
// file contents.
func imageDigest(version string, entries []imageEntry) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "redlock-harness image v1\x00%s\x00", version)
	for _, e := range entries {
		fmt.Fprintf(h, "%s\x00%s\x00%o\x00", e.path, e.link, e.mode)
		if e.link != "" {
			continue
		}
		f, err := os.Open(e.path)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeImageContext lays out the build context in dir: rootfs/ mirrors the
// image's files, and the Dockerfile copies it onto scratch.
func writeImageContext(dir string, entries []imageEntry, version, digest string) error {
	root := filepath.Join(dir, "rootfs")
	for _, d := range []string{dockerDataDir, dockerTLSDir, "/tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		return err
	}
	for _, e := range entries {
		dst := filepath.Join(root, e.path)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if e.link != "" {
			if err := os.Symlink(e.link, dst); err != nil {
				return err
			}
			continue
		}
		if err := copyFile(e.path, dst, e.mode); err != nil {
			return err
		}
	}
	dockerfile := fmt.Sprintf(`# Built by the redlock test harness (tests/harness/docker_image.go).
FROM scratch
COPY rootfs/ /
WORKDIR %s
LABEL %s="%s" org.redlock-harness.redis-version="%s"
`, dockerDataDir, dockerDigestLabel, digest, version)
	return os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644)
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
