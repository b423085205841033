package main

import (
	"context"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
)

// kubeletConfig is the KubeletConfiguration for this machine and this control plane.
func (n *node) kubeletConfig(port, healthzPort int) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# kubelet 1.35+ refuses to start on a cgroup v1 host unless this is false.
failCgroupV1: false
# No systemd as PID 1: cgroupfs, like containerd's runc (SystemdCgroup = false).
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://%s
# The test apiserver has no kubelet client certificate: exec/logs reach the kubelet
# anonymously, so it listens on 127.0.0.1 only (the apiserver resolves the node's hostname,
# which maps to 127.0.0.1 here).
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
failSwapOn: false
podLogsDir: %s
# Not the default /usr/libexec/kubernetes/kubelet-plugins/volume/exec, which it would create.
volumePluginDir: %s
resolvConf: /etc/resolv.conf
serializeImagePulls: false
registerNode: true
# There is no registry to pull the imported images back from: never garbage-collect them, and
# evict only when the machine is really out of space or memory.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  nodefs.inodesFree: "1%%"
`, n.cfg.containerdSocket(), port, healthzPort, n.cfg.path("pod-logs"), n.cfg.path("kubelet", "volume-plugins"))
}

func (n *node) startKubelet() error {
	port, err := freePort()
	if err != nil {
		return err
	}
	healthz, err := freePort()
	if err != nil {
		return err
	}
	config := n.cfg.path("kubelet-config.yaml")
	if err := os.WriteFile(config, []byte(n.kubeletConfig(port, healthz)), 0o644); err != nil {
		return err
	}
	args := []string{
		"--config=" + config,
		"--kubeconfig=" + n.cfg.kubeconfig(), // admin: no bootstrap, no node client certificate
		"--root-dir=" + n.cfg.path("kubelet"),
		"--cert-dir=" + n.cfg.path("kubelet", "pki"),
		"--node-ip=" + n.cfg.IP,
		"-v=1",
	}
	n.kubelet, err = startSelfChild("kubelet", n.cfg.logPath("kubelet"), "kubelet", args)
	return err
}

// startScheduler starts kube-scheduler and returns its healthz URL.
func (n *node) startScheduler() (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	kc := n.cfg.kubeconfig()
	args := []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		// Token-only clients: the apiserver publishes no client CA to look up (as for kcm).
		"--authentication-skip-lookup=true",
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"-v=0",
	}
	n.scheduler, err = startSelfChild("kube-scheduler", n.cfg.logPath("kube-scheduler"), "kube-scheduler", args)
	return fmt.Sprintf("https://127.0.0.1:%d/healthz", port), err
}

func clientsetFor(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 10 * time.Second
	return kubernetes.NewForConfig(cfg)
}

func nodeReady(cs kubernetes.Interface, name string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// untaintNotReady removes node.kubernetes.io/not-ready: the TaintNodesByCondition admission
// plugin adds it when the node registers, and only the node-lifecycle controller (not run
// here) would lift it; until then nothing but tolerating Pods is scheduled.
func untaintNotReady(cs kubernetes.Interface, name string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		var keep []corev1.Taint
		for _, t := range node.Spec.Taints {
			if t.Key != corev1.TaintNodeNotReady {
				keep = append(keep, t)
			}
		}
		if len(keep) == len(node.Spec.Taints) {
			return nil
		}
		node.Spec.Taints = keep
		_, err = cs.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{})
		return err
	})
}

// deleteNodePods deletes every Pod bound to the node (1s grace) and waits, at most timeout,
// until they are gone. kubelet removes a Pod's API object only after it has stopped its
// sandbox, i.e. after the CNI DEL. The controller-manager is already stopped, so no
// controller recreates them.
func deleteNodePods(cs kubernetes.Interface, nodeName string, timeout time.Duration, logf func(string, ...any)) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	list := func() ([]corev1.Pod, error) {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + nodeName})
		if err != nil {
			return nil, err
		}
		return pods.Items, nil
	}
	pods, err := list()
	if err != nil || len(pods) == 0 {
		return err
	}
	begin := time.Now()
	grace := int64(1)
	for _, p := range pods {
		err := cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
		if err != nil && !apierrors.IsNotFound(err) {
			logf("node teardown: delete pod %s/%s: %v", p.Namespace, p.Name, err)
		}
	}
	for {
		left, err := list()
		if err == nil && len(left) == 0 {
			logf("node teardown: %d pods deleted in %s", len(pods), time.Since(begin).Round(time.Millisecond))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d pods still on the node after %s (the CRI cleanup removes their sandboxes)", len(left), timeout)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
