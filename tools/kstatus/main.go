// Command kstatus prints what sigs.k8s.io/cli-utils/pkg/kstatus/status (the library Flux and
// kpt use to decide whether an applied object is ready) says about one object, and optionally what a
// Flux Kustomization's healthCheckExprs entry says about it, so the tests check our conditions against
// the real library rather than a re-implementation of it.
//
// Input: one object as JSON on stdin (e.g. `kubectl get qbi NAME -o json`).
// Output: {"status": "Current|InProgress|Failed|...", "message": "...", "flux": "Current|..."} on stdout.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/ext"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type output struct {
	Status     string `json:"status"`
	Message    string `json:"message"`
	Conditions []any  `json:"conditions"`
	Flux       string `json:"flux,omitempty"`
	FluxError  string `json:"fluxError,omitempty"`
}

func main() {
	current := flag.String("current", "", "Flux healthCheckExprs `current` CEL expression")
	inProgress := flag.String("in-progress", "", "Flux healthCheckExprs `inProgress` CEL expression")
	failed := flag.String("failed", "", "Flux healthCheckExprs `failed` CEL expression")
	flag.Parse()
	if err := run(os.Stdin, os.Stdout, *inProgress, *failed, *current); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer, inProgress, failed, current string) error {
	raw, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	// Decoded as the API machinery does (integers as int64), which status.Compute relies on.
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return fmt.Errorf("stdin is not a Kubernetes object in JSON: %w", err)
	}
	obj := u.Object
	result, err := status.Compute(u)
	if err != nil {
		return err
	}
	res := output{Status: result.Status.String(), Message: result.Message, Conditions: []any{}}
	for _, c := range result.Conditions {
		res.Conditions = append(res.Conditions, c)
	}
	if current != "" {
		res.Flux, res.FluxError = fluxStatus(obj, inProgress, failed, current)
	}
	return json.NewEncoder(out).Encode(res)
}

// fluxStatus follows Flux's documented evaluation (RFC-0009): an object whose status.observedGeneration
// differs from metadata.generation is InProgress; otherwise inProgress, failed and current are evaluated
// in that order and the first true one wins; none true is InProgress. As in Flux, the object's top-level
// fields are the CEL variables (metadata, spec and status always declared). An expression that cannot be
// evaluated (a field it reads is absent) leaves the object Unknown: Flux reports the error and keeps
// waiting until the Kustomization's timeout.
func fluxStatus(obj map[string]any, inProgress, failed, current string) (string, string) {
	if st, ok := obj["status"].(map[string]any); ok {
		if og, ok := st["observedGeneration"]; ok {
			gen, _ := obj["metadata"].(map[string]any)["generation"]
			if fmt.Sprint(og) != fmt.Sprint(gen) {
				return status.InProgressStatus.String(), ""
			}
		}
	}
	opts := []cel.EnvOption{cel.OptionalTypes(), ext.Strings()}
	declared := map[string]bool{}
	for _, key := range []string{"apiVersion", "kind", "metadata", "spec", "status"} {
		declared[key] = true
		opts = append(opts, cel.Variable(key, cel.DynType))
	}
	for key := range obj {
		if !declared[key] {
			opts = append(opts, cel.Variable(key, cel.DynType))
		}
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return status.UnknownStatus.String(), err.Error()
	}
	for _, e := range []struct {
		expr   string
		result status.Status
	}{
		{inProgress, status.InProgressStatus},
		{failed, status.FailedStatus},
		{current, status.CurrentStatus},
	} {
		if e.expr == "" {
			continue
		}
		ast, issues := env.Compile(e.expr)
		if issues.Err() != nil {
			return status.UnknownStatus.String(), fmt.Sprintf("%q: %v", e.expr, issues.Err())
		}
		prg, err := env.Program(ast)
		if err != nil {
			return status.UnknownStatus.String(), err.Error()
		}
		val, _, err := prg.Eval(obj)
		if err != nil {
			return status.UnknownStatus.String(), fmt.Sprintf("%q: %v", e.expr, err)
		}
		if b, ok := val.Value().(bool); ok && b {
			return e.result.String(), ""
		}
	}
	return status.InProgressStatus.String(), ""
}
