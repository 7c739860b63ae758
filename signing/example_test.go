package signing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"slipway.dev/slipway/signing"
)

// A project's key pair: the private half is stored as it is (encrypted),
// and loaded with the server's secret when something is signed.
func ExampleGenerateKeyPair() {
	secret := []byte("from-the-server-secret")
	kp, err := signing.GenerateKeyPair(secret)
	if err != nil {
		panic(err)
	}
	priv, _ := pem.Decode(kp.PrivateKey)
	pub, _ := pem.Decode(kp.PublicKey)
	s, err := signing.LoadSigner(kp.PrivateKey, secret)
	if err != nil {
		panic(err)
	}
	fmt.Println(priv.Type)
	fmt.Println(pub.Type)
	fmt.Println(s.Fingerprint() == kp.Fingerprint)
	// Output:
	// ENCRYPTED SIGSTORE PRIVATE KEY
	// PUBLIC KEY
	// true
}

// Sign an image by digest, attest how it was built, and verify both. The
// password of the registry is a Slipway token.
func Example() {
	ctx := context.Background()
	secret := []byte("from-the-server-secret")
	kp, _ := signing.GenerateKeyPair(secret)
	signer, _ := signing.LoadSigner(kp.PrivateKey, secret)
	auth := signing.WithAuth(&authn.Basic{Username: "builder", Password: "sha256~token"})

	img, _ := name.NewDigest("127.0.0.1:5000/proj/web@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
	if err := signing.Sign(ctx, img, signer, auth); err != nil {
		panic(err)
	}
	prov := &signing.Provenance{BuilderID: "https://slipway.example", BuildName: "proj/web-7", Strategy: "Docker", FinishedOn: time.Now()}
	st, _ := prov.Statement()
	if err := signing.Attest(ctx, img, signer, st, auth); err != nil {
		panic(err)
	}
	res, err := signing.Verify(ctx, img, [][]byte{kp.PublicKey}, auth)
	if err != nil {
		panic(err) // errors.Is(err, signing.ErrUnsigned), ErrInvalidSignature, ErrDigestMismatch
	}
	fmt.Println("signed by", res.KeyFingerprint)
	_, err = signing.VerifyAttestation(ctx, img, [][]byte{kp.PublicKey}, signing.PredicateSLSAProvenance, auth)
	fmt.Println(err)
}

// The SLSA v1 predicate a Slipway build gets.
func ExampleProvenance_Predicate() {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	p := &signing.Provenance{
		BuilderID:    "https://slipway.example",
		BuildName:    "proj/web-7",
		SourceRepo:   "https://git.example/web.git",
		SourceCommit: "0123456789abcdef0123456789abcdef01234567",
		Strategy:     "Docker",
		BuildArgs:    map[string]string{"VERSION": "7"},
		BaseImages:   []signing.Image{{Name: "127.0.0.1:5000/proj/base:1", Digest: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}},
		Internal:     map[string]any{"buildkit": "v0.34.2"},
		StartedOn:    start,
		FinishedOn:   start.Add(90 * time.Second),
	}
	pred, err := p.Predicate()
	if err != nil {
		panic(err)
	}
	b, _ := json.Marshal(pred)
	var out bytes.Buffer
	json.Indent(&out, b, "", "  ")
	fmt.Println(out.String())
	// Output:
	// {
	//   "buildDefinition": {
	//     "buildType": "https://slipway.dev/build/v1",
	//     "externalParameters": {
	//       "buildArgs": {
	//         "VERSION": "7"
	//       },
	//       "source": {
	//         "commit": "0123456789abcdef0123456789abcdef01234567",
	//         "repository": "https://git.example/web.git"
	//       },
	//       "strategy": "Docker"
	//     },
	//     "internalParameters": {
	//       "buildkit": "v0.34.2"
	//     },
	//     "resolvedDependencies": [
	//       {
	//         "uri": "git+https://git.example/web.git@0123456789abcdef0123456789abcdef01234567",
	//         "digest": {
	//           "gitCommit": "0123456789abcdef0123456789abcdef01234567"
	//         }
	//       },
	//       {
	//         "uri": "127.0.0.1:5000/proj/base@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
	//         "digest": {
	//           "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	//         },
	//         "name": "127.0.0.1:5000/proj/base:1"
	//       }
	//     ]
	//   },
	//   "runDetails": {
	//     "builder": {
	//       "id": "https://slipway.example"
	//     },
	//     "metadata": {
	//       "invocationId": "proj/web-7",
	//       "startedOn": "2026-03-01T12:00:00Z",
	//       "finishedOn": "2026-03-01T12:01:30Z"
	//     }
	//   }
	// }
}
