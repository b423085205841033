package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func runUp(argv []string) int {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	dir := fs.String("dir", "", "state directory (created; etcd data, certs, kubeconfig, logs)")
	withKCM := fs.Bool("with-controller-manager", false, "also run kube-controller-manager (child process)")
	port := fs.Int("port", 0, "apiserver port on 127.0.0.1 (0: pick a free one)")
	keepData := fs.Bool("keep-data", false, "reuse DIR/etcd from an earlier run instead of starting empty")
	timeout := fs.Duration("timeout", 3*time.Minute, "give up if not ready within this time")
	if err := fs.Parse(argv); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() != 0 {
		usage()
		return 2
	}
	abs, err := filepath.Abs(*dir)
	if err == nil {
		err = os.MkdirAll(abs, 0o755)
	}
	if err == nil && !*keepData {
		err = os.RemoveAll(filepath.Join(abs, "etcd"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}

	// stdout must carry only the READY line, but the apiserver (klog, cobra, client-go) and
	// libraries write to fds 1 and 2 freely. Keep private copies of the original fds for our
	// own output and point fds 1 and 2 at DIR/apiserver.log.
	out, errOut, err := redirectStdio(filepath.Join(abs, "apiserver.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	logf := func(format string, a ...any) { fmt.Fprintf(errOut, "testenv: "+format+"\n", a...) }

	// Our own handler, in addition to the one NewAPIServerCommand installs (which cancels the
	// apiserver's context on the first signal and exits the process on the second).
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	p, err := writePKI(abs)
	if err != nil {
		logf("%v", err)
		return 1
	}
	etcd, etcdURL, err := startEtcd(abs)
	if err != nil {
		logf("%v (see %s/etcd.log)", err, abs)
		return 1
	}
	defer etcd.Close() // last: after the apiserver has stopped using it

	if *port == 0 {
		if *port, err = freePort(); err != nil {
			logf("%v", err)
			return 1
		}
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", *port)
	api := &exited{done: make(chan struct{})}
	go func() {
		api.err = runAPIServer(apiserverArgs(etcdURL, *port, p, *withKCM))
		close(api.done)
	}()
	// stop shuts the apiserver down; a signal already received has started that by itself.
	signalled := false
	stop := func(code int) int { return stopAPIServer(api, signalled, logf, code) }

	kubeconfig := filepath.Join(abs, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, server, p); err != nil {
		logf("write kubeconfig: %v", err)
		return stop(1)
	}
	env := fmt.Sprintf("KUBECONFIG=%s\nAPISERVER_URL=%s\nTESTENV_TOKEN=%s\nTESTENV_CA=%s\n", kubeconfig, server, p.token, p.caCert)
	if err := os.WriteFile(filepath.Join(abs, "env"), []byte(env), 0o600); err != nil {
		logf("write env: %v", err)
		return stop(1)
	}

	client, err := apiClient(p)
	if err != nil {
		logf("%v", err)
		return stop(1)
	}
	start := time.Now()
	deadline := time.After(*timeout)
	get := func(base, path string) bool { return httpOK(client, base+path, p.token) }

	// Ready = /readyz green (all post-start hooks, incl. RBAC bootstrap policy) and the default
	// namespace created by the apiserver's system-namespaces controller.
	if err := waitFor(func() bool {
		return get(server, "/readyz") && get(server, "/api/v1/namespaces/default")
	}, api, nil, sigs, &signalled, deadline); err != nil {
		logf("apiserver not ready: %v (see %s/apiserver.log)", err, abs)
		return stop(1)
	}

	var kcm *exec.Cmd
	var kcmDone *exited
	if *withKCM {
		kcmPort, err := freePort()
		if err == nil {
			kcm, kcmDone, err = startKCM(abs, kcmArgs(kubeconfig, kcmPort, p))
		}
		if err != nil {
			logf("%v", err)
			return stop(1)
		}
		kcmURL := fmt.Sprintf("https://127.0.0.1:%d", kcmPort)
		insecure := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // kcm serves a throwaway self-signed cert
		}}
		// Ready = kcm healthz answers and the serviceaccount controller has created the
		// "default" ServiceAccount (Pods are rejected by ServiceAccount admission until then).
		if err := waitFor(func() bool {
			return httpOK(insecure, kcmURL+"/healthz", "") &&
				get(server, "/api/v1/namespaces/default/serviceaccounts/default")
		}, api, kcmDone, sigs, &signalled, deadline); err != nil {
			logf("kube-controller-manager not ready: %v (see %s/kcm.log)", err, abs)
			stopKCM(kcm, kcmDone, logf)
			return stop(1)
		}
	}

	fmt.Fprintf(out, "TESTENV READY kubeconfig=%s\n", kubeconfig)
	out.Sync()
	logf("ready in %s: %s (logs in %s)", time.Since(start).Round(time.Millisecond), server, abs)

	code := 0
	select {
	case s := <-sigs:
		signalled = true
		logf("%s: shutting down", s)
	case <-api.done:
		logf("apiserver exited unexpectedly: %v (see %s/apiserver.log)", api.err, abs)
		code = 1
	case <-kcmDone.wait():
		logf("kube-controller-manager exited unexpectedly: %v (see %s/kcm.log)", kcmDone.err, abs)
		code = 1
	}
	if kcm != nil {
		stopKCM(kcm, kcmDone, logf)
	}
	return stop(code)
}

// exited reports that a component has stopped: done is closed, then err is valid.
type exited struct {
	done chan struct{}
	err  error
}

// wait returns the done channel; nil (blocks forever in a select) for a component not running.
func (e *exited) wait() <-chan struct{} {
	if e == nil {
		return nil
	}
	return e.done
}

// waitFor polls cond until it holds; it fails early when a component exits, on a signal, or at
// the deadline.
func waitFor(cond func() bool, api, kcm *exited, sigs <-chan os.Signal, signalled *bool, deadline <-chan time.Time) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-api.wait():
			return fmt.Errorf("apiserver exited: %v", api.err)
		case <-kcm.wait():
			return fmt.Errorf("kube-controller-manager exited: %v", kcm.err)
		case s := <-sigs:
			*signalled = true
			return fmt.Errorf("interrupted by %s", s)
		case <-deadline:
			return errors.New("timed out")
		case <-tick.C:
		}
	}
}

// stopKCM sends SIGTERM to the controller-manager child and waits; SIGKILL after 10s.
func stopKCM(kcm *exec.Cmd, e *exited, logf func(string, ...any)) {
	_ = kcm.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		logf("kube-controller-manager did not stop in 10s: killing it")
		_ = kcm.Process.Kill()
		<-e.done
	}
}

// stopAPIServer stops the in-process apiserver and waits for it. Its context belongs to the
// signal handler NewAPIServerCommand installed, so the only way to stop it is a signal: if we
// are not already shutting down because of one, send SIGTERM to ourselves (only once: its
// handler exits the process on a second signal). When a signal did arrive, the apiserver began
// shutting down at the same moment as the child was being stopped.
func stopAPIServer(api *exited, signalled bool, logf func(string, ...any), code int) int {
	select {
	case <-api.done: // already exited
		return code
	default:
	}
	if !signalled {
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
	}
	select {
	case <-api.done:
	case <-time.After(60 * time.Second):
		logf("apiserver did not stop in 60s")
		return 1
	}
	return code
}

func apiClient(p *pki) (*http.Client, error) {
	ca, err := os.ReadFile(p.caCert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("no CA certificate in " + p.caCert)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, nil
}

func httpOK(c *http.Client, url, token string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

// freePort asks the kernel for a free loopback port. There is a small window before the
// component binds it; acceptable for a test environment.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// redirectStdio points fds 1 and 2 at logPath and returns files for the original stdout/stderr.
func redirectStdio(logPath string) (out, errOut *os.File, err error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	o, err := unix.Dup(1)
	if err != nil {
		return nil, nil, err
	}
	e, err := unix.Dup(2)
	if err != nil {
		return nil, nil, err
	}
	unix.CloseOnExec(o) // the kcm child must not inherit our real stdout
	unix.CloseOnExec(e)
	if err := unix.Dup3(int(f.Fd()), 1, 0); err != nil {
		return nil, nil, err
	}
	if err := unix.Dup3(int(f.Fd()), 2, 0); err != nil {
		return nil, nil, err
	}
	return os.NewFile(uintptr(o), "stdout"), os.NewFile(uintptr(e), "stderr"), nil
}
