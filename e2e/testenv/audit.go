package main

import (
	"os"
	"path/filepath"
)

// auditPolicy records, at level Metadata (who, verb, resource, response code; no bodies), every
// request made by a ServiceAccount and nothing else: the project's components run as
// ServiceAccounts, so DIR/audit.log lists exactly the verbs and resources they use, to compare
// with the RBAC roles we ship. The control plane's own clients (admin token, loopback) and the
// node's components (admin kubeconfig) are not ServiceAccounts, which keeps the log small.
// RequestReceived is omitted: ResponseComplete (and ResponseStarted for watches) says it all.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: None
`

// auditArgs writes the policy to DIR/audit-policy.yaml and returns the apiserver flags that
// log to DIR/audit.log as JSON lines (one file for the whole run: no rotation). The log
// backend's "blocking" mode writes each event before the response is sent, so a test reading
// the file right after its requests sees them all (batch mode would buffer them).
func auditArgs(dir string) ([]string, error) {
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
		return nil, err
	}
	log := filepath.Join(dir, "audit.log")
	// The apiserver appends: start each run with an empty log.
	if err := os.Remove(log); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	return []string{
		"--audit-policy-file=" + policy,
		"--audit-log-path=" + log,
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--audit-log-maxsize=0",
	}, nil
}
