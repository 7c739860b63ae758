package signing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// Keyring keeps projects' signing keys: it makes the key pair of every
// SigningKey created without one (the private half encrypted with
// Password, in a hidden SigningKeySecret), loads signers, and resolves the
// key entries of image policies.
type Keyring struct {
	Store    *store.Store
	Password []byte

	// signers caches decrypted keys by project/name: decrypting one
	// (scrypt) costs about 100 ms of CPU, which signing every image of a
	// rebase wave must not pay per image. An entry is used only while the
	// stored encrypted key is the one it was decrypted from.
	mu      sync.Mutex
	signers map[string]cachedSigner
}

type cachedSigner struct {
	encrypted string
	signer    *Signer
}

// maxCachedSigners bounds the cache; past it, an arbitrary entry goes.
const maxCachedSigners = 4096

// Run makes missing key pairs until ctx ends.
func (k *Keyring) Run(ctx context.Context) {
	inf := store.NewInformer(k.Store, api.SigningKeys)
	q := store.NewWorkQueue()
	inf.AddHandler(func(ev store.Event) {
		if ev.Type == api.Deleted {
			m := ev.Object.GetObjectMeta()
			_, _ = k.Store.Delete(ctx, api.SigningKeySecrets, m.Namespace, m.Name, "")
			return
		}
		m := ev.Object.GetObjectMeta()
		q.Add(m.Namespace + "/" + m.Name)
	})
	go inf.Run(ctx)
	q.Process(ctx, inf, "signing: key", func(o api.Object) error { return k.ensure(ctx, o.(*api.SigningKey)) })
}

func (k *Keyring) ensure(ctx context.Context, key *api.SigningKey) error {
	if key.PublicKey != "" {
		return nil
	}
	kp, err := GenerateKeyPair(k.Password)
	if err != nil {
		return err
	}
	sec := &api.SigningKeySecret{ObjectMeta: api.ObjectMeta{Name: key.Name, Namespace: key.Namespace}, EncryptedPrivateKey: string(kp.PrivateKey)}
	if err := k.Store.Create(ctx, api.SigningKeySecrets, sec); err != nil {
		if !errors.Is(err, store.ErrExists) {
			return err
		}
		// A secret from an earlier attempt: publish its public key.
		o, err := k.Store.Get(ctx, api.SigningKeySecrets, key.Namespace, key.Name)
		if err != nil {
			return err
		}
		s, err := LoadSigner([]byte(o.(*api.SigningKeySecret).EncryptedPrivateKey), k.Password)
		if err != nil {
			return err
		}
		kp = &KeyPair{PublicKey: s.PublicKey(), Fingerprint: s.Fingerprint()}
	}
	_, err = k.Store.GuaranteedUpdate(ctx, api.SigningKeys, key.Namespace, key.Name, store.UpdateOptions{}, func(o api.Object) error {
		sk := o.(*api.SigningKey)
		if sk.PublicKey == "" {
			sk.PublicKey, sk.Fingerprint = string(kp.PublicKey), kp.Fingerprint
		}
		return nil
	})
	if err == nil {
		slog.Info("signing: made a key pair", "key", key.Namespace+"/"+key.Name, "fingerprint", kp.Fingerprint)
	}
	return err
}

// Signer loads a project's key for signing.
func (k *Keyring) Signer(ctx context.Context, project, name string) (*Signer, error) {
	o, err := k.Store.Get(ctx, api.SigningKeySecrets, project, name)
	if err != nil {
		return nil, fmt.Errorf("signing key %s/%s: %w (create it with `slipway create signingkey %s -n %s`)", project, name, err, name, project)
	}
	enc := o.(*api.SigningKeySecret).EncryptedPrivateKey
	id := project + "/" + name
	k.mu.Lock()
	c, ok := k.signers[id]
	k.mu.Unlock()
	if ok && c.encrypted == enc {
		return c.signer, nil
	}
	sg, err := LoadSigner([]byte(enc), k.Password)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.signers == nil {
		k.signers = map[string]cachedSigner{}
	}
	if len(k.signers) >= maxCachedSigners {
		for old := range k.signers {
			delete(k.signers, old)
			break
		}
	}
	k.signers[id] = cachedSigner{encrypted: enc, signer: sg}
	return sg, nil
}

// PublicKey resolves a policy's key entry: PROJECT/NAME of a SigningKey,
// or a PEM public key.
func (k *Keyring) PublicKey(ctx context.Context, entry string) ([]byte, error) {
	if strings.Contains(entry, "-----BEGIN") {
		return []byte(entry), nil
	}
	project, name, ok := strings.Cut(entry, "/")
	if !ok {
		return nil, fmt.Errorf("key %q is neither PROJECT/NAME nor a PEM public key", entry)
	}
	o, err := k.Store.Get(ctx, api.SigningKeys, project, name)
	if err != nil {
		return nil, err
	}
	if pk := o.(*api.SigningKey).PublicKey; pk != "" {
		return []byte(pk), nil
	}
	return nil, fmt.Errorf("key %s has no key pair yet", entry)
}
