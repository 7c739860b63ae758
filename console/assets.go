package console

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// ui holds placeholder.html, always, and dist/, the built pages, when
// `make build` (npm run build in web/) made them before go build. A
// binary built without them serves the placeholder, which says so.
//
//go:embed ui
var ui embed.FS

// Built reports whether the console's pages are in this binary.
func Built() bool {
	_, err := fs.Stat(ui, "ui/dist/index.html")
	return err == nil
}

// staticHandler serves the app's index at Prefix and its assets under
// Prefix+"assets/"; any other path is the index too, for the app's own
// routes.
func staticHandler() http.Handler {
	dist, _ := fs.Sub(ui, "ui/dist")
	files := http.FileServerFS(dist)
	index := "ui/placeholder.html"
	if Built() {
		index = "ui/dist/index.html"
	}
	page, _ := ui.ReadFile(index)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest := strings.TrimPrefix(path.Clean(r.URL.Path), strings.TrimSuffix(Prefix, "/"))
		if strings.HasPrefix(rest, "/assets/") && Built() {
			// File names carry a hash of their content.
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
			r2 := r.Clone(r.Context())
			r2.URL.Path = rest
			files.ServeHTTP(w, r2)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(page)
	})
}
