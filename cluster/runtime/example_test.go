package runtime_test

import (
	"context"
	"fmt"
	"log"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/runtime"
)

// The node agent makes one runtime at start, adopts what ListPods shows,
// and syncs the pods bound to its node.
func ExampleNewDocker() {
	r, err := runtime.NewDocker(runtime.Config{
		Prefix:      "node1",
		DataDir:     "/var/lib/slipway/node",
		PauseBinary: "/proc/self/exe", // slipway, run as `slipway pause`
		PauseArgs:   []string{"pause"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	uid := int64(1000100000)
	pod := &api.Pod{
		ObjectMeta: api.ObjectMeta{Namespace: "shop", Name: "web-1", UID: "0b6f3e52-7c1e-4c55-9a2c-2f1a8c6f0d11"},
		Spec: api.PodSpec{
			Containers: []api.Container{{Name: "web", Image: "127.0.0.1:5000/shop/web@sha256:…"}},
			// The node agent defaults the UID from the project's range;
			// without one (and without the privileged marker) the
			// runtime refuses the pod.
			SecurityContext: &api.PodSecurityContext{RunAsUser: &uid},
		},
	}
	for _, c := range pod.Spec.Containers {
		if err := r.EnsureImage(ctx, c.Image, ""); err != nil {
			log.Fatal(err) // errors.Is(err, runtime.ErrImagePull): reason ErrImagePull
		}
	}
	if err := r.SyncPod(ctx, pod); err != nil {
		log.Fatal(err)
	}
	pods, err := r.ListPods(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range pods {
		fmt.Println(p.Namespace, p.Name, p.IP)
	}
}
