// Package atomicfile replaces files so that a reader, or a crash, sees the
// old content or the new one, never a part: the flags file and the ramp
// state file, which several replicas of the proxy may share.
package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// staleAfter is the age from which a temporary file beside the target is
// taken for the leftover of a write killed before its rename. A write takes
// milliseconds, so a younger one may be another process's write in progress.
const staleAfter = time.Minute

// Write replaces path with data: it writes a temporary file beside it
// (".<name>.*.tmp"), with the mode of the file it replaces (perm for a new
// one), syncs it, renames it over path and syncs the folder, so that the
// rename survives a crash too. Leftovers of earlier writes killed before
// their rename are removed first, once older than staleAfter.
func Write(path string, data []byte, perm fs.FileMode) (err error) {
	dir, base := filepath.Dir(path), filepath.Base(path)
	removeStale(dir, base, time.Now())
	mode := perm
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	tmp, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync folder: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}

// removeStale removes the temporary files of writes to base that were
// killed before their rename, once older than staleAfter. It is best
// effort: what it cannot remove stays.
func removeStale(dir, base string, now time.Time) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	prefix := "." + base + "."
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, ".tmp") || e.IsDir() {
			continue
		}
		if info, err := e.Info(); err == nil && now.Sub(info.ModTime()) > staleAfter {
			_ = os.Remove(filepath.Join(dir, name))
		}
	}
}
