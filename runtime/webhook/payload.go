package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// payload holds the fields of a workflow_job delivery that jit-runners uses.
type payload struct {
	Action       string
	WorkflowJob  *workflowJob
	Repository   repository
	Installation struct {
		ID int64
	}
}

type workflowJob struct {
	ID           int64
	RunID        int64
	Status       string
	Conclusion   string
	Labels       []string
	RunnerID     int64
	RunnerName   string
	CreatedAt    string
	StartedAt    string
	CompletedAt  string
	Name         string
	WorkflowName string
}

type repository struct {
	FullName string
	Owner    struct {
		Login string
	}
}

// errBadPayload marks a payload that is not valid JSON or not a usable
// workflow_job delivery; the handler answers 400.
var errBadPayload = errors.New("bad workflow_job payload")

// decodeWorkflowJob parses body. It validates the whole document as strict
// JSON (RFC 8259, as encoding/json does) and extracts the few fields the
// handler uses in the same single pass, skipping the rest without building
// anything: GitHub's deliveries run to tens of kilobytes and the webhook's
// budget is 100 µs. A field of the wrong type is an error, as in
// encoding/json; keys match case-insensitively, as in encoding/json.
func decodeWorkflowJob(body []byte) (*payload, error) {
	d := decoder{data: body}
	var p payload
	d.ws()
	if err := d.object(func(key []byte) error {
		switch {
		case keyIs(key, "action"):
			return d.str(&p.Action, "action")
		case keyIs(key, "workflow_job"):
			if d.null() {
				p.WorkflowJob = nil
				return nil
			}
			if d.peek() != '{' {
				return d.typeErr("workflow_job", "an object")
			}
			if p.WorkflowJob == nil { // a repeated key merges, as in encoding/json
				p.WorkflowJob = &workflowJob{}
			}
			return d.job(p.WorkflowJob)
		case keyIs(key, "repository"):
			return d.repository(&p.Repository)
		case keyIs(key, "installation"):
			return d.objectOrNull("installation", func(key []byte) error {
				if keyIs(key, "id") {
					return d.int(&p.Installation.ID, "installation.id")
				}
				return d.skip()
			})
		}
		return d.skip()
	}); err != nil {
		return nil, err
	}
	d.ws()
	if d.pos != len(d.data) {
		return nil, d.syntaxErr("data after the JSON document")
	}

	switch {
	case p.WorkflowJob == nil:
		return nil, fmt.Errorf("%w: workflow_job is missing or not an object", errBadPayload)
	case p.WorkflowJob.ID <= 0:
		return nil, fmt.Errorf("%w: workflow_job.id is missing", errBadPayload)
	case p.Action == "":
		return nil, fmt.Errorf("%w: action is missing", errBadPayload)
	}
	if p.Repository.Owner.Login == "" {
		if owner, _, ok := strings.Cut(p.Repository.FullName, "/"); ok {
			p.Repository.Owner.Login = owner
		}
	}
	return &p, nil
}

func (d *decoder) job(j *workflowJob) error {
	return d.object(func(key []byte) error {
		switch {
		case keyIs(key, "id"):
			return d.int(&j.ID, "workflow_job.id")
		case keyIs(key, "run_id"):
			return d.int(&j.RunID, "workflow_job.run_id")
		case keyIs(key, "status"):
			return d.str(&j.Status, "workflow_job.status")
		case keyIs(key, "conclusion"):
			return d.str(&j.Conclusion, "workflow_job.conclusion")
		case keyIs(key, "labels"):
			return d.strings(&j.Labels, "workflow_job.labels")
		case keyIs(key, "runner_id"):
			return d.int(&j.RunnerID, "workflow_job.runner_id")
		case keyIs(key, "runner_name"):
			return d.str(&j.RunnerName, "workflow_job.runner_name")
		case keyIs(key, "created_at"):
			return d.str(&j.CreatedAt, "workflow_job.created_at")
		case keyIs(key, "started_at"):
			return d.str(&j.StartedAt, "workflow_job.started_at")
		case keyIs(key, "completed_at"):
			return d.str(&j.CompletedAt, "workflow_job.completed_at")
		case keyIs(key, "name"):
			return d.str(&j.Name, "workflow_job.name")
		case keyIs(key, "workflow_name"):
			return d.str(&j.WorkflowName, "workflow_job.workflow_name")
		}
		return d.skip()
	})
}

func (d *decoder) repository(r *repository) error {
	return d.objectOrNull("repository", func(key []byte) error {
		switch {
		case keyIs(key, "full_name"):
			return d.str(&r.FullName, "repository.full_name")
		case keyIs(key, "owner"):
			return d.objectOrNull("repository.owner", func(key []byte) error {
				if keyIs(key, "login") {
					return d.str(&r.Owner.Login, "repository.owner.login")
				}
				return d.skip()
			})
		}
		return d.skip()
	})
}

// decoder is a single-pass validating JSON reader over a byte slice.
type decoder struct {
	data  []byte
	pos   int
	depth int
}

// maxDepth bounds nesting, as encoding/json does (10000); a delivery never
// comes close.
const maxDepth = 10000

func (d *decoder) syntaxErr(msg string) error {
	return fmt.Errorf("%w: invalid JSON at byte %d: %s", errBadPayload, d.pos, msg)
}

func (d *decoder) typeErr(field, want string) error {
	return fmt.Errorf("%w: %s is not %s", errBadPayload, field, want)
}

func (d *decoder) ws() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *decoder) peek() byte {
	if d.pos < len(d.data) {
		return d.data[d.pos]
	}
	return 0
}

// null consumes a null literal if one is next.
func (d *decoder) null() bool {
	if d.pos+4 <= len(d.data) && string(d.data[d.pos:d.pos+4]) == "null" {
		d.pos += 4
		return true
	}
	return false
}

// object reads an object, calling field for each key with the decoder
// positioned at the value (after the colon and whitespace); field must consume
// the value. It expects d positioned at '{'.
func (d *decoder) object(field func(key []byte) error) error {
	if d.peek() != '{' {
		return d.syntaxErr("expected an object")
	}
	d.depth++
	if d.depth > maxDepth {
		return d.syntaxErr("nesting too deep")
	}
	d.pos++
	d.ws()
	if d.peek() == '}' {
		d.pos++
		d.depth--
		return nil
	}
	for {
		if d.peek() != '"' {
			return d.syntaxErr("expected a string key")
		}
		key, err := d.rawString()
		if err != nil {
			return err
		}
		d.ws()
		if d.peek() != ':' {
			return d.syntaxErr("expected ':'")
		}
		d.pos++
		d.ws()
		if err := field(key); err != nil {
			return err
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.pos++
			d.ws()
		case '}':
			d.pos++
			d.depth--
			return nil
		default:
			return d.syntaxErr("expected ',' or '}'")
		}
	}
}

// objectOrNull reads an object field that may be null; any other type is a
// type error naming field.
func (d *decoder) objectOrNull(field string, f func(key []byte) error) error {
	if d.null() {
		return nil
	}
	if d.peek() != '{' {
		if err := d.skip(); err != nil {
			return err
		}
		return d.typeErr(field, "an object")
	}
	return d.object(f)
}

// rawString consumes a string and returns its bytes between the quotes,
// escapes not yet decoded.
func (d *decoder) rawString() ([]byte, error) {
	d.pos++ // opening quote
	start := d.pos
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			s := d.data[start:d.pos]
			d.pos++
			return s, nil
		case c == '\\':
			if d.pos+1 >= len(d.data) {
				return nil, d.syntaxErr("unterminated escape")
			}
			switch d.data[d.pos+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				d.pos += 2
			case 'u':
				if d.pos+6 > len(d.data) || !isHex4(d.data[d.pos+2:d.pos+6]) {
					return nil, d.syntaxErr("invalid \\u escape")
				}
				d.pos += 6
			default:
				return nil, d.syntaxErr("invalid escape")
			}
		case c < 0x20:
			return nil, d.syntaxErr("control character in string")
		default:
			d.pos++
		}
	}
	return nil, d.syntaxErr("unterminated string")
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
			return false
		}
	}
	return true
}

// str reads a string (or null, leaving *dst unchanged as encoding/json does).
func (d *decoder) str(dst *string, field string) error {
	if d.null() {
		return nil
	}
	if d.peek() != '"' {
		if err := d.skip(); err != nil {
			return err
		}
		return d.typeErr(field, "a string")
	}
	start := d.pos
	raw, err := d.rawString()
	if err != nil {
		return err
	}
	for _, c := range raw {
		if c == '\\' || c >= 0x80 {
			// Escapes and non-ASCII are rare here: let encoding/json decode
			// them exactly (surrogate pairs, invalid UTF-8 replacement).
			return json.Unmarshal(d.data[start:d.pos], dst)
		}
	}
	*dst = string(raw)
	return nil
}

// strings reads an array of strings (or null).
func (d *decoder) strings(dst *[]string, field string) error {
	if d.null() {
		*dst = nil
		return nil
	}
	if d.peek() != '[' {
		if err := d.skip(); err != nil {
			return err
		}
		return d.typeErr(field, "an array of strings")
	}
	out := make([]string, 0, 4)
	err := d.array(func() error {
		var s string
		if d.peek() != '"' && !d.null() {
			if err := d.skip(); err != nil {
				return err
			}
			return d.typeErr(field, "an array of strings")
		}
		if d.peek() == '"' {
			if err := d.str(&s, field); err != nil {
				return err
			}
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		return err
	}
	*dst = out
	return nil
}

// array reads an array, calling elem with the decoder at each element;
// elem must consume it. It expects d positioned at '['.
func (d *decoder) array(elem func() error) error {
	d.depth++
	if d.depth > maxDepth {
		return d.syntaxErr("nesting too deep")
	}
	d.pos++
	d.ws()
	if d.peek() == ']' {
		d.pos++
		d.depth--
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.pos++
			d.ws()
		case ']':
			d.pos++
			d.depth--
			return nil
		default:
			return d.syntaxErr("expected ',' or ']'")
		}
	}
}

// int reads an integer that fits int64 (or null). Fractions and exponents
// are type errors, as encoding/json reports them for an int64 field.
func (d *decoder) int(dst *int64, field string) error {
	if d.null() {
		return nil
	}
	c := d.peek()
	if c != '-' && (c < '0' || c > '9') {
		if err := d.skip(); err != nil {
			return err
		}
		return d.typeErr(field, "an integer")
	}
	start := d.pos
	if err := d.number(); err != nil {
		return err
	}
	n, err := strconv.ParseInt(string(d.data[start:d.pos]), 10, 64)
	if err != nil {
		return d.typeErr(field, "an integer")
	}
	*dst = n
	return nil
}

// number consumes a JSON number.
func (d *decoder) number() error {
	if d.peek() == '-' {
		d.pos++
	}
	switch c := d.peek(); {
	case c == '0':
		d.pos++
	case '1' <= c && c <= '9':
		d.digits()
	default:
		return d.syntaxErr("invalid number")
	}
	if d.peek() == '.' {
		d.pos++
		if !isDigit(d.peek()) {
			return d.syntaxErr("invalid number")
		}
		d.digits()
	}
	if c := d.peek(); c == 'e' || c == 'E' {
		d.pos++
		if c := d.peek(); c == '+' || c == '-' {
			d.pos++
		}
		if !isDigit(d.peek()) {
			return d.syntaxErr("invalid number")
		}
		d.digits()
	}
	return nil
}

func (d *decoder) digits() {
	for d.pos < len(d.data) && isDigit(d.data[d.pos]) {
		d.pos++
	}
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// skip validates and consumes any value.
func (d *decoder) skip() error {
	switch c := d.peek(); {
	case c == '{':
		return d.object(func([]byte) error { return d.skip() })
	case c == '[':
		return d.array(d.skip)
	case c == '"':
		_, err := d.rawString()
		return err
	case c == '-' || isDigit(c):
		return d.number()
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	}
	return d.syntaxErr("expected a value")
}

func (d *decoder) literal(lit string) error {
	if d.pos+len(lit) > len(d.data) || string(d.data[d.pos:d.pos+len(lit)]) != lit {
		return d.syntaxErr("invalid literal")
	}
	d.pos += len(lit)
	return nil
}

// keyIs reports whether a raw (undecoded) key equals name (lower-case
// ASCII) ignoring case, as encoding/json matches keys. The common case, a
// plain ASCII key, is compared in place; keys with escapes or non-ASCII bytes
// are decoded and compared with Unicode case folding, as encoding/json does.
func keyIs(raw []byte, name string) bool {
	plain := true
	for _, c := range raw {
		if c == '\\' || c >= 0x80 {
			plain = false
			break
		}
	}
	if !plain {
		var k string
		if err := json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &k); err != nil {
			return false
		}
		return strings.EqualFold(k, name)
	}
	if len(raw) != len(name) {
		return false
	}
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}
