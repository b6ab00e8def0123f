package ghfake

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

const (
	defaultPerPage = 30
	maxPerPage     = 100
)

// paginate applies GitHub's per_page (default 30, at most 100) and page
// (from 1) query parameters to a list of total items, sets the Link header
// (rel prev, next, last, first as applicable) and returns the slice bounds of
// the page. A page past the end is empty.
func paginate(w http.ResponseWriter, r *http.Request, total int) (from, to int) {
	q := r.URL.Query()
	perPage, err := strconv.Atoi(q.Get("per_page"))
	if err != nil || perPage <= 0 {
		perPage = defaultPerPage
	}
	perPage = min(perPage, maxPerPage)
	page, err := strconv.Atoi(q.Get("page"))
	if err != nil || page <= 0 {
		page = 1
	}
	last := max((total+perPage-1)/perPage, 1)

	// GitHub's links keep the other parameters and end in per_page and page.
	q.Del("per_page")
	q.Del("page")
	rest := q.Encode()
	if rest != "" {
		rest += "&"
	}
	link := func(p int, rel string) string {
		return fmt.Sprintf("<http://%s%s?%sper_page=%d&page=%d>; rel=%q", r.Host, r.URL.Path, rest, perPage, p, rel)
	}
	var links []string
	if page > 1 {
		links = append(links, link(min(page-1, last), "prev"))
	}
	if page < last {
		links = append(links, link(page+1, "next"), link(last, "last"))
	}
	if page > 1 {
		links = append(links, link(1, "first"))
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}

	from = min(min(page-1, last)*perPage, total)
	to = min(from+perPage, total)
	return from, to
}

// apiBase is the API base URL the request used, without a trailing slash
// (http://host or http://host/api/v3), for URLs in response bodies.
func apiBase(r *http.Request) string {
	if r.URL.Path == ghesPrefix || strings.HasPrefix(r.URL.Path, ghesPrefix+"/") {
		return "http://" + r.Host + ghesPrefix
	}
	return "http://" + r.Host
}
