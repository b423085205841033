package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// child is a process this binary started and owns: a component run as a subcommand of this
// same binary (`testenv kcm|kube-scheduler|kubelet ...`) or containerd.
type child struct {
	name string
	cmd  *exec.Cmd
	*exited
}

// selfCommand returns the argv to run this binary's SUBCOMMAND.
func selfCommand(subcommand string, args []string) (string, []string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	return self, append([]string{subcommand}, args...), nil
}

// startChild starts path ARGS with stdout and stderr written to logPath (truncated).
//
// Pdeathsig kills the child when the parent dies, even by SIGKILL. Linux delivers it when the
// *thread* that forked the child exits, so the goroutine locks its OS thread and keeps it (by
// waiting for the child in it) for the child's whole life.
//
// Setpgid: a Ctrl-C in a terminal signals the whole foreground process group; the children
// must not get it, or they would all exit at once instead of in teardown order (kubelet must
// still run while the pods are deleted, so every sandbox gets its CNI DEL).
func startChild(name, logPath, path string, args []string) (*child, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}

	started := make(chan error, 1)
	c := &child{name: name, cmd: cmd, exited: &exited{name: name, done: make(chan struct{})}}
	go func() {
		runtime.LockOSThread() // never unlocked: the thread must outlive the child (see above)
		defer logf.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.err = cmd.Wait()
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return c, nil
}

// startSelfChild starts `testenv SUBCOMMAND ARGS` as a child process.
func startSelfChild(name, logPath, subcommand string, args []string) (*child, error) {
	path, argv, err := selfCommand(subcommand, args)
	if err != nil {
		return nil, err
	}
	return startChild(name, logPath, path, argv)
}

// stop sends SIGTERM and waits; SIGKILL after grace. A nil child is not running: no-op.
func (c *child) stop(grace time.Duration, logf func(string, ...any)) {
	if c == nil {
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		logf("%s did not stop in %s: killing it", c.name, grace)
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// wait returns the done channel; nil (blocks forever in a select) for a child not running.
func (c *child) wait() <-chan struct{} {
	if c == nil {
		return nil
	}
	return c.done
}
