package apiserver_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/server/servertest"
)

// TestUIDRanges: every project gets a UID range of its own, even when
// made at once; the range a request names is replaced, an update cannot
// change it, and a deleted project's block is handed out again.
func TestUIDRanges(t *testing.T) {
	env := servertest.Start(t, anyRegistryPort)
	ctx := context.Background()
	admin := env.Admin
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			p := &api.Project{ObjectMeta: api.ObjectMeta{Name: fmt.Sprintf("p%d", i)}}
			if i == 0 {
				p.Annotations = map[string]string{api.UIDRangeAnnotation: "1/2000000000"}
			}
			errs[i] = admin.Create(ctx, api.Projects, p)
		})
	}
	wg.Wait()
	seen := map[api.UIDRange]string{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("create p%d: %v", i, errs[i])
		}
		name := fmt.Sprintf("p%d", i)
		o, err := admin.Get(ctx, api.Projects, "", name)
		if err != nil {
			t.Fatal(err)
		}
		r, err := api.ProjectUIDRange(o.(*api.Project))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r.Size != api.UIDRangeSize || r.First < api.UIDRangeBase {
			t.Errorf("%s has range %s; want a block of %d from %d (the request's 1/2000000000 replaced)", name, r, api.UIDRangeSize, api.UIDRangeBase)
		}
		if other, dup := seen[r]; dup {
			t.Errorf("%s and %s share the range %s", name, other, r)
		}
		seen[r] = name
	}

	o, _ := admin.Get(ctx, api.Projects, "", "p3")
	p := o.(*api.Project)
	was := p.Annotations[api.UIDRangeAnnotation]
	p.Annotations[api.UIDRangeAnnotation] = "1/10"
	if err := admin.Update(ctx, api.Projects, p); err != nil {
		t.Fatal(err)
	}
	o, _ = admin.Get(ctx, api.Projects, "", "p3")
	if got := o.GetObjectMeta().Annotations[api.UIDRangeAnnotation]; got != was {
		t.Errorf("after an update naming 1/10, p3's range is %q; want %q kept", got, was)
	}

	if _, err := admin.Delete(ctx, api.Projects, "", "p3"); err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "later"}}); err != nil {
		t.Fatal(err)
	}
	o, _ = admin.Get(ctx, api.Projects, "", "later")
	if got := o.GetObjectMeta().Annotations[api.UIDRangeAnnotation]; got != was {
		t.Errorf("the project made after p3 was deleted has %q; want p3's freed block %q (the lowest free)", got, was)
	}
}
