// Command pause is the sandbox ("infra") container of testenv's node: it holds the pod's
// namespaces open. As PID 1 of the pod's PID namespace (when shared) it reaps orphaned children;
// it exits 0 on SIGTERM/SIGINT so the runtime stops a sandbox without waiting for a SIGKILL.
// Static (CGO_ENABLED=0), so the image needs no libc: build.sh builds it next to testenv.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		reapChildren()
	}
}

// reapChildren collects every exited child; one SIGCHLD may stand for several.
func reapChildren() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
