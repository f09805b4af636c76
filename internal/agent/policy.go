package agent

import (
	"fmt"
	"log/slog"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"amime.dev/amime/internal/policy"
)

// startPolicyInformers wires the NetworkPolicy controller to the shared
// informers: policies, and every pod and namespace of the cluster (peers are
// selected cluster-wide, not only on this node).
func startPolicyInformers(cfg Config, factory informers.SharedInformerFactory, m *metrics, log *slog.Logger) (*policy.Controller, error) {
	nft, err := knftables.New(knftables.InetFamily, policy.Table)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	pods := factory.Core().V1().Pods()
	nss := factory.Core().V1().Namespaces()
	nps := factory.Networking().V1().NetworkPolicies()
	c := policy.NewController(policy.RenderConfig{NodeName: cfg.NodeName, LogGroup: cfg.PolicyLogGroup},
		policy.NewDataplane(nft, cfg.PolicyLogGroup), pods.Lister(), nss.Lister(), nps.Lister(),
		policy.NewMetrics(m.reg), log.With("controller", "policy"))
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.OnChange() },
		UpdateFunc: func(_, _ any) { c.OnChange() },
		DeleteFunc: func(any) { c.OnChange() },
	}
	for _, inf := range []cache.SharedIndexInformer{pods.Informer(), nss.Informer(), nps.Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, err
		}
	}
	return c, nil
}
