package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"time"

	criapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
)

// containerdConfig is Debian's containerd 1.6 configured so that all its state is under
// DIR/node (root, state, sockets, opt) and the CRI plugin fits this machine.
func (n *node) containerdConfig() string {
	c := &n.cfg
	runc, _ := exec.LookPath("runc") // checkTools found it
	return fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # runc create failed: "nsexec: failed to update /proc/self/oom_score_adj: Permission denied":
  # the machine's capability bounding set lacks CAP_SYS_RESOURCE, so never lower the OOM score.
  restrict_oom_score_adj = true
  disable_apparmor = true
  # exec/attach/port-forward streaming server: a random loopback port, not the fixed 10010.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # cgroup v1 and no systemd as PID 1: kubelet and runc use cgroupfs.
        SystemdCgroup = false
        BinaryName = %q
`, c.path("containerd", "root"), c.path("containerd", "state"), c.containerdSocket(),
		c.containerdSocket()+".ttrpc", c.path("containerd", "opt"), pauseImage,
		c.cniBinDir(), c.cniConfDir(), runc)
}

func (n *node) startContainerd() error {
	if err := os.MkdirAll(n.cfg.path("containerd"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(n.cfg.containerdConfig(), []byte(n.containerdConfig()), 0o644); err != nil {
		return err
	}
	var err error
	n.containerd, err = startContainerd(&n.cfg, n.cfg.logPath("containerd"))
	return err
}

// startContainerd starts containerd with the node's config as a child process and waits until
// its CRI plugin reports the runtime and the network ready.
func startContainerd(cfg *nodeConfig, logPath string) (*child, error) {
	c, err := startChild("containerd", logPath, "containerd", []string{"--config", cfg.containerdConfig()})
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := criReady(cfg.containerdSocket())
		if err == nil {
			return c, nil
		}
		if isClosed(c.done) {
			return nil, fmt.Errorf("containerd exited: %v (see %s)", c.err, logPath)
		}
		if time.Now().After(deadline) {
			c.stop(5*time.Second, func(string, ...any) {})
			return nil, fmt.Errorf("containerd not ready in 30s: %v (see %s)", err, logPath)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func criClient(socket string) (criapi.RuntimeService, error) {
	return remote.NewRemoteRuntimeService(context.Background(), "unix://"+socket, 30*time.Second, nil, false)
}

// criReady returns nil when the CRI runtime answers and reports RuntimeReady and NetworkReady
// (the latter needs a CNI config in conf_dir).
func criReady(socket string) error {
	// A plain dial first: gRPC would log every refused connection to a stale socket.
	conn, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return err
	}
	conn.Close()
	rs, err := criClient(socket)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := rs.Status(ctx, false)
	if err != nil {
		return err
	}
	for _, c := range st.GetStatus().GetConditions() {
		if !c.Status {
			return fmt.Errorf("CRI condition %s false: %s %s", c.Type, c.Reason, c.Message)
		}
	}
	return nil
}

// removeSandboxes stops and removes every pod sandbox through CRI: StopPodSandbox stops its
// containers and runs the CNI DEL (Multus, then the delegates), RemovePodSandbox deletes it.
// Sandboxes kubelet already stopped only get removed. Runs a few at a time, within timeout.
func removeSandboxes(socket string, timeout time.Duration, logf func(string, ...any)) error {
	rs, err := criClient(socket)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	sandboxes, err := rs.ListPodSandbox(ctx, nil)
	if err != nil {
		return fmt.Errorf("CRI ListPodSandbox: %w", err)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed []string
		slots  = make(chan struct{}, 8)
	)
	for _, sb := range sandboxes {
		wg.Add(1)
		go func(sb *runtimeapi.PodSandbox) {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			err := rs.StopPodSandbox(ctx, sb.Id)
			if err == nil {
				err = rs.RemovePodSandbox(ctx, sb.Id)
			}
			if err != nil {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("%s/%s: %v", sb.GetMetadata().GetNamespace(), sb.GetMetadata().GetName(), err))
				mu.Unlock()
			}
		}(sb)
	}
	wg.Wait()
	if len(sandboxes) > 0 {
		logf("node: removed %d of %d pod sandboxes through CRI", len(sandboxes)-len(failed), len(sandboxes))
	}
	if len(failed) > 0 {
		return fmt.Errorf("CRI sandbox removal failed (the host cleanup removes what is left): %v", failed)
	}
	return nil
}
