package ghfake

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/http"
	"strings"
	"time"
)

const githubAPI = "https://api.github.com"

// SignPayload returns the X-Hub-Signature-256 value GitHub sends for body:
// "sha256=" and the hex HMAC-SHA256 of body under secret.
func SignPayload(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// SignPayloadSHA1 returns the legacy X-Hub-Signature value: "sha1=" and the
// hex HMAC-SHA1 of body under secret.
func SignPayloadSHA1(secret, body []byte) string {
	m := hmac.New(sha1.New, secret)
	m.Write(body)
	return "sha1=" + hex.EncodeToString(m.Sum(nil))
}

// DeliveryHeaders returns the headers of a GitHub webhook delivery of event
// (e.g. "workflow_job") carrying body: X-GitHub-Event, a fresh
// X-GitHub-Delivery GUID, hook ids, User-Agent, Content-Type and, when secret
// is not empty, X-Hub-Signature-256 and X-Hub-Signature.
func DeliveryHeaders(event string, secret, body []byte) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "GitHub-Hookshot/8e03811")
	h.Set("X-GitHub-Event", event)
	h.Set("X-GitHub-Delivery", newGUID())
	h.Set("X-GitHub-Hook-ID", "471398452")
	h.Set("X-GitHub-Hook-Installation-Target-Type", "integration")
	h.Set("X-GitHub-Hook-Installation-Target-ID", fmt.Sprint(DefaultAppID))
	if len(secret) > 0 {
		h.Set("X-Hub-Signature", SignPayloadSHA1(secret, body))
		h.Set("X-Hub-Signature-256", SignPayload(secret, body))
	}
	return h
}

// NewWebhookRequest builds a POST of body to url with DeliveryHeaders.
func NewWebhookRequest(ctx context.Context, url, event string, secret, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("ghfake: webhook request: %w", err)
	}
	req.Header = DeliveryHeaders(event, secret, body)
	return req, nil
}

// WorkflowJobEvent describes a workflow_job delivery for WorkflowJobPayload.
type WorkflowJobEvent struct {
	// Action is queued, waiting, in_progress or completed. Empty takes
	// Job.Status, and both empty mean queued.
	Action string
	// Job is the workflow_job; Job.Owner and Job.Repo name the repository.
	// Zero fields get AddJob's defaults; Status defaults to Action, and a
	// completed job's Conclusion to "success".
	Job Job
	// InstallationID is installation.id; 0 leaves the installation out.
	InstallationID int64
	// UserOwned makes the repository's owner a User, with no organization.
	UserOwned bool
	// Sender is the sender's login (default "octocat").
	Sender string
	// Size pads the payload to at least Size bytes with repository
	// custom_properties; without it a payload is about 7 KB.
	Size int
	// Now is the time for defaulted timestamps (default time.Now()).
	Now time.Time
}

// WorkflowJobPayload returns a workflow_job webhook body shaped like
// GitHub's: action, workflow_job, repository (with its full set of URL
// fields and owner), organization, installation and sender.
func WorkflowJobPayload(ev WorkflowJobEvent) []byte {
	now := ev.Now
	if now.IsZero() {
		now = time.Now()
	}
	job := ev.Job
	switch {
	case ev.Action == "" && job.Status == "":
		ev.Action, job.Status = JobQueued, JobQueued
	case ev.Action == "":
		ev.Action = job.Status
	case job.Status == "":
		job.Status = ev.Action
	}
	if job.Status == JobCompleted && job.Conclusion == "" {
		job.Conclusion = ConclusionSuccess
	}
	if job.Owner == "" {
		job.Owner = "octo-org"
	}
	if job.Repo == "" {
		job.Repo = "octo-repo"
	}
	job = job.withDefaults(now, stableID(job.Owner+"/"+job.Repo+"/job"))
	sender := ev.Sender
	if sender == "" {
		sender = "octocat"
	}
	ownerType := "Organization"
	if ev.UserOwned {
		ownerType = "User"
	}

	payload := map[string]any{
		"action":       ev.Action,
		"workflow_job": job.render(githubAPI),
		"repository":   repositoryObject(job.Owner, job.Repo, ownerType, now),
		"sender":       userObject(sender, "User"),
	}
	if !ev.UserOwned {
		payload["organization"] = organizationObject(job.Owner)
	}
	if ev.InstallationID != 0 {
		payload["installation"] = map[string]any{
			"id":      ev.InstallationID,
			"node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9u" + fmt.Sprint(ev.InstallationID),
		}
	}
	b := mustMarshal(payload)
	if ev.Size <= len(b) {
		return b
	}
	return padPayload(payload, ev.Size)
}

// padPayload adds repository custom_properties until the body is size bytes
// (or slightly more when the gap is smaller than one property).
func padPayload(payload map[string]any, size int) []byte {
	repo := payload["repository"].(map[string]any)
	props := map[string]string{}
	repo["custom_properties"] = props
	const value = "team-platform-engineering/ci-infrastructure/self-hosted-runners/cost-center-4711/"
	key := func(i int) string { return fmt.Sprintf("compliance_property_%04d", i) }
	// Every full property adds the same number of bytes: key and value,
	// quoted, a colon and a comma.
	full := len(key(0)) + len(value) + 6
	b := mustMarshal(payload)
	i := 0
	for ; i < (size-len(b))/full; i++ {
		props[key(i)] = value
	}
	for b = mustMarshal(payload); len(b) < size; i++ {
		v := value[:min(max(size-len(b)-len(key(i))-6, 1), len(value))]
		props[key(i)] = v
		b = mustMarshal(payload)
	}
	return b
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("ghfake: encode payload: %v", err))
	}
	return b
}

// stableID derives a plausible positive id from a name, so a repository or
// organization keeps its id across payloads.
func stableID(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte(strings.ToLower(name)))
	return int64(h.Sum64()%900_000_000) + 100_000_000
}

func userObject(login, typ string) map[string]any {
	id := stableID(login)
	u := "https://api.github.com/users/" + login
	return map[string]any{
		"login":               login,
		"id":                  id,
		"node_id":             fmt.Sprintf("MDQ6VXNlcj%d", id),
		"avatar_url":          fmt.Sprintf("https://avatars.githubusercontent.com/u/%d?v=4", id),
		"gravatar_id":         "",
		"url":                 u,
		"html_url":            "https://github.com/" + login,
		"followers_url":       u + "/followers",
		"following_url":       u + "/following{/other_user}",
		"gists_url":           u + "/gists{/gist_id}",
		"starred_url":         u + "/starred{/owner}{/repo}",
		"subscriptions_url":   u + "/subscriptions",
		"organizations_url":   u + "/orgs",
		"repos_url":           u + "/repos",
		"events_url":          u + "/events{/privacy}",
		"received_events_url": u + "/received_events",
		"type":                typ,
		"user_view_type":      "public",
		"site_admin":          false,
	}
}

func organizationObject(login string) map[string]any {
	id := stableID(login)
	u := "https://api.github.com/orgs/" + login
	return map[string]any{
		"login":              login,
		"id":                 id,
		"node_id":            fmt.Sprintf("MDEyOk9yZ2FuaXphdGlvbj%d", id),
		"url":                u,
		"repos_url":          u + "/repos",
		"events_url":         u + "/events",
		"hooks_url":          u + "/hooks",
		"issues_url":         u + "/issues",
		"members_url":        u + "/members{/member}",
		"public_members_url": u + "/public_members{/member}",
		"avatar_url":         fmt.Sprintf("https://avatars.githubusercontent.com/u/%d?v=4", id),
		"description":        "",
	}
}

func repositoryObject(owner, name, ownerType string, now time.Time) map[string]any {
	full := owner + "/" + name
	id := stableID(full)
	u := "https://api.github.com/repos/" + full
	created := now.AddDate(-2, 0, 0).UTC()
	repo := map[string]any{
		"id":                          id,
		"node_id":                     fmt.Sprintf("R_kgDO%d", id),
		"name":                        name,
		"full_name":                   full,
		"private":                     true,
		"owner":                       userObject(owner, ownerType),
		"html_url":                    "https://github.com/" + full,
		"description":                 "Service " + name + " and its CI pipelines",
		"fork":                        false,
		"url":                         u,
		"forks_url":                   u + "/forks",
		"keys_url":                    u + "/keys{/key_id}",
		"collaborators_url":           u + "/collaborators{/collaborator}",
		"teams_url":                   u + "/teams",
		"hooks_url":                   u + "/hooks",
		"issue_events_url":            u + "/issues/events{/number}",
		"events_url":                  u + "/events",
		"assignees_url":               u + "/assignees{/user}",
		"branches_url":                u + "/branches{/branch}",
		"tags_url":                    u + "/tags",
		"blobs_url":                   u + "/git/blobs{/sha}",
		"git_tags_url":                u + "/git/tags{/sha}",
		"git_refs_url":                u + "/git/refs{/sha}",
		"trees_url":                   u + "/git/trees{/sha}",
		"statuses_url":                u + "/statuses/{sha}",
		"languages_url":               u + "/languages",
		"stargazers_url":              u + "/stargazers",
		"contributors_url":            u + "/contributors",
		"subscribers_url":             u + "/subscribers",
		"subscription_url":            u + "/subscription",
		"commits_url":                 u + "/commits{/sha}",
		"git_commits_url":             u + "/git/commits{/sha}",
		"comments_url":                u + "/comments{/number}",
		"issue_comment_url":           u + "/issues/comments{/number}",
		"contents_url":                u + "/contents/{+path}",
		"compare_url":                 u + "/compare/{base}...{head}",
		"merges_url":                  u + "/merges",
		"archive_url":                 u + "/{archive_format}{/ref}",
		"downloads_url":               u + "/downloads",
		"issues_url":                  u + "/issues{/number}",
		"pulls_url":                   u + "/pulls{/number}",
		"milestones_url":              u + "/milestones{/number}",
		"notifications_url":           u + "/notifications{?since,all,participating}",
		"labels_url":                  u + "/labels{/name}",
		"releases_url":                u + "/releases{/id}",
		"deployments_url":             u + "/deployments",
		"created_at":                  ts(created),
		"updated_at":                  ts(now.Add(-time.Hour)),
		"pushed_at":                   ts(now.Add(-time.Minute)),
		"git_url":                     "git://github.com/" + full + ".git",
		"ssh_url":                     "git@github.com:" + full + ".git",
		"clone_url":                   "https://github.com/" + full + ".git",
		"svn_url":                     "https://github.com/" + full,
		"homepage":                    nil,
		"size":                        4821,
		"stargazers_count":            3,
		"watchers_count":              3,
		"language":                    "Go",
		"has_issues":                  true,
		"has_projects":                false,
		"has_downloads":               true,
		"has_wiki":                    false,
		"has_pages":                   false,
		"has_discussions":             false,
		"forks_count":                 0,
		"mirror_url":                  nil,
		"archived":                    false,
		"disabled":                    false,
		"open_issues_count":           7,
		"license":                     nil,
		"allow_forking":               false,
		"is_template":                 false,
		"web_commit_signoff_required": false,
		"topics":                      []string{"ci", "golang"},
		"visibility":                  "private",
		"forks":                       0,
		"open_issues":                 7,
		"watchers":                    3,
		"default_branch":              "main",
		"custom_properties":           map[string]string{},
	}
	return repo
}

func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	x := hex.EncodeToString(b[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:]
}
