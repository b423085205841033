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
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/embed"
	"golang.org/x/sys/unix"
	genericapiserver "k8s.io/apiserver/pkg/server"
)

type upOptions struct {
	dir      string
	withKCM  bool
	withNode bool
	port     int
	keepData bool
	timeout  time.Duration
	underlay []string // --underlay-nics
}

func parseUpFlags(argv []string) (*upOptions, bool) {
	o := &upOptions{}
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.StringVar(&o.dir, "dir", "", "state directory (created; etcd data, certs, kubeconfig, logs)")
	fs.BoolVar(&o.withKCM, "with-controller-manager", false, "also run kube-controller-manager (child process)")
	fs.BoolVar(&o.withNode, "with-node", false, "also run a real node: containerd, kube-scheduler, kubelet, Multus (root only; implies --with-controller-manager)")
	nics := fs.String("underlay-nics", "tu0,tu1", "with --with-node: veth pairs NAME/NAME-peer to create as the node's underlay NICs")
	fs.IntVar(&o.port, "port", 0, "apiserver port on 127.0.0.1 (0: pick a free one)")
	fs.BoolVar(&o.keepData, "keep-data", false, "reuse DIR/etcd and DIR/pki (CA, certificates, tokens) from an earlier run instead of starting empty")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Minute, "give up if not ready within this time")
	if err := fs.Parse(argv); err != nil || o.dir == "" || fs.NArg() != 0 {
		return nil, false
	}
	if o.withNode {
		o.withKCM = true // Deployments, ServiceAccounts and EndpointSlices need controllers
		for _, n := range strings.Split(*nics, ",") {
			if n = strings.TrimSpace(n); n != "" {
				o.underlay = append(o.underlay, n)
			}
		}
	}
	return o, true
}

func runUp(argv []string) int {
	o, ok := parseUpFlags(argv)
	if !ok {
		usage()
		return 2
	}
	abs, err := filepath.Abs(o.dir)
	if err == nil {
		err = os.MkdirAll(abs, 0o755)
	}
	if err == nil && !o.keepData {
		err = os.RemoveAll(filepath.Join(abs, "etcd"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	o.dir = abs

	var nd *node
	if o.withNode {
		// Checked before anything is started or touched: a failure here changes nothing.
		if nd, err = newNode(o); err != nil {
			fmt.Fprintln(os.Stderr, "testenv:", err)
			return 1
		}
	}

	// stdout must carry only the READY line, but the apiserver (klog, cobra, client-go) and
	// libraries write to fds 1 and 2 freely. Keep private copies of the original fds for our
	// own output and point fds 1 and 2 at DIR/apiserver.log.
	out, errOut, err := redirectStdio(filepath.Join(abs, "apiserver.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	c := &cluster{opts: o, dir: abs, node: nd, api: &exited{name: "kube-apiserver", done: make(chan struct{})}}
	c.logf = func(format string, a ...any) { fmt.Fprintf(errOut, "testenv: "+format+"\n", a...) }
	if nd != nil {
		nd.logf = c.logf
	}

	// Created before our own signal handler: see newAPIServerCommand.
	apiCmd := newAPIServerCommand()
	c.sigs = make(chan os.Signal, 2)
	signal.Notify(c.sigs, syscall.SIGTERM, syscall.SIGINT)

	start := time.Now()
	if err := c.start(apiCmd); err != nil {
		c.logf("%v", err)
		return c.shutdown(1)
	}
	fmt.Fprintf(out, "TESTENV READY kubeconfig=%s\n", c.kubeconfig)
	out.Sync()
	c.logf("ready in %s: %s (logs in %s)", time.Since(start).Round(time.Millisecond), c.server, abs)
	return c.shutdown(c.waitForEnd())
}

// cluster is one `testenv up`: what it started, so that shutdown stops exactly that.
type cluster struct {
	opts     *upOptions
	dir      string
	logf     func(string, ...any)
	sigs     chan os.Signal
	deadline <-chan time.Time

	p          *pki
	etcd       *embed.Etcd
	api        *exited
	apiStarted bool
	port       int
	server     string
	kubeconfig string
	client     *http.Client
	kcm        *child
	node       *node
}

// start brings everything up; on error, shutdown stops whatever was started.
func (c *cluster) start(apiCmd *cobra.Command) error {
	c.deadline = time.After(c.opts.timeout)
	var err error
	if c.opts.keepData {
		c.p = loadPKI(c.dir)
	}
	if c.p == nil {
		if c.p, err = writePKI(c.dir); err != nil {
			return err
		}
	}
	if c.node != nil {
		// containerd, images, CNI config and underlay NICs do not need the control plane:
		// prepare them while it starts.
		if err := c.node.prepareInBackground(); err != nil {
			return err
		}
	}
	var etcdURL string
	if c.etcd, etcdURL, err = startEtcd(c.dir); err != nil {
		return fmt.Errorf("%v (see %s/etcd.log)", err, c.dir)
	}
	if c.port = c.opts.port; c.port == 0 {
		if c.port, err = freePort(); err != nil {
			return err
		}
	}
	audit, err := auditArgs(c.dir)
	if err != nil {
		return err
	}
	c.server = fmt.Sprintf("https://127.0.0.1:%d", c.port)
	args := apiserverArgs(etcdURL, c.port, c.p, c.opts.withKCM, c.opts.withNode, audit)
	c.apiStarted = true
	go func() {
		c.api.err = runAPIServer(apiCmd, args)
		close(c.api.done)
	}()

	c.kubeconfig = filepath.Join(c.dir, "kubeconfig")
	if err := writeKubeconfig(c.kubeconfig, c.server, c.p); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	if err := c.writeEnv(nil); err != nil {
		return err
	}
	if c.client, err = apiClient(c.p); err != nil {
		return err
	}
	// Ready = /readyz green (all post-start hooks, incl. RBAC bootstrap policy) and the default
	// namespace created by the apiserver's system-namespaces controller.
	if err := c.waitFor(func() bool {
		return c.get("/readyz") && c.get("/api/v1/namespaces/default")
	}); err != nil {
		return fmt.Errorf("apiserver not ready: %v (see %s/apiserver.log)", err, c.dir)
	}
	if c.opts.withKCM {
		if err := c.startKCM(); err != nil {
			return err
		}
	}
	if c.node != nil {
		env, err := c.node.start(c)
		if err != nil {
			return err
		}
		return c.writeEnv(env)
	}
	return nil
}

func (c *cluster) startKCM() error {
	kcmPort, err := freePort()
	if err != nil {
		return err
	}
	if c.kcm, err = startSelfChild("kube-controller-manager", filepath.Join(c.dir, "kcm.log"), "kcm",
		kcmArgs(c.kubeconfig, kcmPort, c.p, c.opts.withNode)); err != nil {
		return err
	}
	kcmURL := fmt.Sprintf("https://127.0.0.1:%d/healthz", kcmPort)
	// Ready = kcm healthz answers and the serviceaccount controller has created the
	// "default" ServiceAccount (Pods are rejected by ServiceAccount admission until then).
	if err := c.waitFor(func() bool {
		return httpOK(insecureClient, kcmURL, "") && c.get("/api/v1/namespaces/default/serviceaccounts/default")
	}, c.kcm.exited); err != nil {
		return fmt.Errorf("kube-controller-manager not ready: %v (see %s/kcm.log)", err, c.dir)
	}
	return nil
}

// writeEnv writes DIR/env: the base values plus extra KEY=VALUE lines (the node's).
func (c *cluster) writeEnv(extra []string) error {
	lines := []string{
		"KUBECONFIG=" + c.kubeconfig,
		"APISERVER_URL=" + c.server,
		fmt.Sprintf("APISERVER_PORT=%d", c.port),
		"TESTENV_TOKEN=" + c.p.token,
		"TESTENV_CA=" + c.p.caCert,
	}
	lines = append(lines, extra...)
	if err := os.WriteFile(filepath.Join(c.dir, "env"), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("write env: %w", err)
	}
	return nil
}

func (c *cluster) get(path string) bool { return httpOK(c.client, c.server+path, c.p.token) }

// waitForEnd blocks until a signal (exit code 0) or until a component exits (1).
func (c *cluster) waitForEnd() int {
	var kubelet, scheduler, containerd <-chan struct{}
	if c.node != nil {
		kubelet, scheduler, containerd = c.node.kubelet.wait(), c.node.scheduler.wait(), c.node.containerd.wait()
	}
	select {
	case s := <-c.sigs:
		c.logf("%s: shutting down", s)
		return 0
	case <-c.api.done:
		c.logf("apiserver exited unexpectedly: %v (see %s/apiserver.log)", c.api.err, c.dir)
	case <-c.kcm.wait():
		c.logf("kube-controller-manager exited unexpectedly: %v (see %s/kcm.log)", c.kcm.err, c.dir)
	case <-kubelet:
		c.logf("kubelet exited unexpectedly: %v (see %s/kubelet.log)", c.node.kubelet.err, c.dir)
	case <-scheduler:
		c.logf("kube-scheduler exited unexpectedly: %v (see %s/kube-scheduler.log)", c.node.scheduler.err, c.dir)
	case <-containerd:
		c.logf("containerd exited unexpectedly: %v (see %s/containerd.log)", c.node.containerd.err, c.dir)
	}
	return 1
}

// shutdown stops everything start started, in order: the controller-manager first (so no
// controller recreates the Pods the node teardown deletes), then the node (which needs the
// apiserver to delete its Pods), then the apiserver, then etcd.
func (c *cluster) shutdown(code int) int {
	begin := time.Now()
	c.kcm.stop(10*time.Second, c.logf)
	if c.node != nil {
		if err := c.node.teardown(c.kubeconfig); err != nil {
			c.logf("node teardown: %v (run `testenv node-down --dir %s` to retry)", err, c.dir)
			code = 1
		}
	}
	if c.apiStarted {
		code = stopAPIServer(c.api, c.logf, code)
	}
	if c.etcd != nil {
		c.etcd.Close()
	}
	c.logf("stopped in %s", time.Since(begin).Round(time.Millisecond))
	return code
}

// exited reports that a component has stopped: done is closed, then err is valid.
type exited struct {
	name string
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

// waitFor polls cond until it holds; it fails early when the apiserver or one of the watched
// components exits, on a signal, or at the deadline.
func (c *cluster) waitFor(cond func() bool, watched ...*exited) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	anyExited := make(chan *exited, len(watched)+1)
	stop := make(chan struct{})
	defer close(stop)
	for _, e := range append(watched, c.api) {
		go func(e *exited) {
			select {
			case <-e.wait():
				anyExited <- e
			case <-stop:
			}
		}(e)
	}
	for {
		if cond() {
			return nil
		}
		select {
		case e := <-anyExited:
			return fmt.Errorf("%s exited: %v", e.name, e.err)
		case s := <-c.sigs:
			return fmt.Errorf("interrupted by %s", s)
		case <-c.deadline:
			return errors.New("timed out")
		case <-tick.C:
		}
	}
}

// stopAPIServer stops the in-process apiserver the way its own signal handler would have (see
// newAPIServerCommand) and waits for it.
func stopAPIServer(api *exited, logf func(string, ...any), code int) int {
	select {
	case <-api.done: // already exited
		return code
	default:
	}
	genericapiserver.RequestShutdown()
	select {
	case <-api.done:
	case <-time.After(60 * time.Second):
		logf("apiserver did not stop in 60s")
		return 1
	}
	return code
}

// insecureClient reaches components that serve a throwaway self-signed cert (kcm, scheduler).
var insecureClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
	TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
}}

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
	unix.CloseOnExec(o) // the child processes must not inherit our real stdout
	unix.CloseOnExec(e)
	if err := unix.Dup3(int(f.Fd()), 1, 0); err != nil {
		return nil, nil, err
	}
	if err := unix.Dup3(int(f.Fd()), 2, 0); err != nil {
		return nil, nil, err
	}
	return os.NewFile(uintptr(o), "stdout"), os.NewFile(uintptr(e), "stderr"), nil
}
