package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

// kcmControllers are the controllers the tests need: workloads (so a Deployment gets a
// ReplicaSet and Pods), garbage collection, namespace deletion, and the service-account
// machinery (default ServiceAccount, tokens, kube-root-ca.crt). Node lifecycle and node IPAM
// are deliberately off: there are no kubelets, and Pod IPs are what spiderpool manages.
var kcmControllers = []string{
	"deployment-controller",
	"replicaset-controller",
	"statefulset-controller",
	"daemonset-controller",
	"job-controller",
	"cronjob-controller",
	"garbage-collector-controller",
	"namespace-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
	"clusterrole-aggregation-controller",
}

func kcmArgs(kubeconfig string, port int, p *pki) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		// Clients authenticate to the apiserver with a token only, so it publishes no client CA in
		// kube-system/extension-apiserver-authentication; don't keep looking it up.
		"--authentication-skip-lookup=true",
		"--controllers=" + strings.Join(kcmControllers, ","),
		"--service-account-private-key-file=" + p.saKey,
		"--root-ca-file=" + p.caCert,
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"-v=0",
	}
}

// startKCM starts `testenv kcm ARGS` as a child process. The controller-manager cannot share
// this process with the apiserver: each installs a once-only signal handler and registers
// global flags, metrics and feature gates.
//
// Pdeathsig kills the child when the parent dies, even by SIGKILL. Linux delivers it when the
// *thread* that forked the child exits, so the goroutine locks its OS thread and keeps it (by
// waiting for the child in it) for the child's whole life.
func startKCM(dir string, args []string) (*exec.Cmd, *exited, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "kcm.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(self, append([]string{"kcm"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	started := make(chan error, 1)
	done := &exited{done: make(chan struct{})}
	go func() {
		runtime.LockOSThread() // never unlocked: the thread must outlive the child (see above)
		defer logf.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done.err = cmd.Wait()
		close(done.done)
	}()
	if err := <-started; err != nil {
		return nil, nil, fmt.Errorf("start kube-controller-manager: %w", err)
	}
	return cmd, done, nil
}

// runKCM is the child process: the upstream cmd/kube-controller-manager main.
func runKCM(args []string) int {
	command := app.NewControllerManagerCommand()
	command.SetArgs(args)
	return cli.Run(command)
}
