// Package logging builds the structured JSON logger every Lambda writes to
// stdout (CloudWatch Logs). Callers attach job, delivery and instance ids;
// nothing here ever receives a secret.
package logging

import (
	"io"
	"log/slog"
)

// New returns a JSON logger at level ("debug", "info", "warn", "error";
// anything else means info) tagged with the component name.
func New(w io.Writer, level, component string) *slog.Logger {
	var l slog.Level
	switch level {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})).With(slog.String("component", component))
}
