package builders

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// Webhooks starts builds from outside: a generic webhook, and GitHub push
// events. The secret must match a trigger's, given inline or in the
// WebHookSecretKey of the Secret its secretReference names. It is kept out
// of the URL, which proxies and access logs keep (L5): the generic hook
// takes it in the X-Slipway-Webhook-Secret header, and a GitHub delivery
// proves it with X-Hub-Signature-256, the body signed with it.
//
//	POST /webhooks/namespaces/PROJECT/buildconfigs/NAME/generic  (X-Slipway-Webhook-Secret: SECRET)
//	POST /webhooks/namespaces/PROJECT/buildconfigs/NAME/github   (X-Hub-Signature-256: sha256=HMAC)
//
// The older form with the secret in the path still works; GitHub
// deliveries to it must be signed as well:
//
//	POST /webhooks/namespaces/PROJECT/buildconfigs/NAME/SECRET/generic
//	POST /webhooks/namespaces/PROJECT/buildconfigs/NAME/SECRET/github
type Webhooks struct {
	Store *store.Store
}

const maxWebhookBody = 1 << 20

// WebhookSecretHeader carries a generic webhook's secret.
const WebhookSecretHeader = "X-Slipway-Webhook-Secret"

func (h *Webhooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		status(w, http.StatusMethodNotAllowed, api.ReasonMethodNotAllow, "webhooks take POST")
		return
	}
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/webhooks/"), "/"), "/")
	if (len(parts) != 5 && len(parts) != 6) || parts[0] != "namespaces" || parts[2] != "buildconfigs" || (parts[len(parts)-1] != "generic" && parts[len(parts)-1] != "github") {
		status(w, http.StatusNotFound, api.ReasonNotFound, "webhook URLs are /webhooks/namespaces/PROJECT/buildconfigs/NAME/generic (with the secret in the "+WebhookSecretHeader+" header) or .../github")
		return
	}
	ns, name, kind := parts[1], parts[3], parts[len(parts)-1]
	// given is the secret the caller sent; none for a GitHub delivery
	// to the new URL, whose signature proves it instead.
	given, inPath := r.Header.Get(WebhookSecretHeader), len(parts) == 6
	if inPath {
		given = parts[4]
	}
	if kind == "generic" && given == "" {
		status(w, http.StatusForbidden, api.ReasonForbidden, "send the webhook's secret in the "+WebhookSecretHeader+" header")
		return
	}
	if len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Label(name)) > 0 {
		status(w, http.StatusBadRequest, api.ReasonBadRequest, "the project or build config name in the URL is not valid")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
	if err != nil {
		status(w, http.StatusRequestEntityTooLarge, api.ReasonTooLarge, "the webhook body is over 1 MiB or unreadable")
		return
	}
	o, err := h.Store.Get(r.Context(), api.BuildConfigs, ns, name)
	if err != nil {
		// Same answer as a wrong secret: the URL must not reveal which
		// configs exist.
		status(w, http.StatusForbidden, api.ReasonForbidden, "no webhook matches this URL and secret")
		return
	}
	bc := o.(*api.BuildConfig)
	want := map[string]string{"generic": "Generic", "github": "GitHub"}[kind]
	sig := r.Header.Get("X-Hub-Signature-256")
	matched := false
	for _, t := range bc.Spec.Triggers {
		if t.Type != want {
			continue
		}
		secret := h.triggerSecret(r.Context(), ns, t)
		switch {
		case secret == "":
		case given != "":
			// Every trigger is compared, so the time taken does not
			// say which one matched.
			if subtle.ConstantTimeCompare([]byte(secret), []byte(given)) == 1 && (kind != "github" || signedWith(secret, body, sig)) {
				matched = true
			}
		case signedWith(secret, body, sig):
			matched = true
		}
	}
	if !matched {
		if kind == "github" && sig == "" {
			status(w, http.StatusForbidden, api.ReasonForbidden, "GitHub deliveries must be signed: set the webhook's secret in GitHub, which sends X-Hub-Signature-256")
			return
		}
		status(w, http.StatusForbidden, api.ReasonForbidden, "no webhook matches this URL and secret")
		return
	}
	cause, ref := "GenericWebhook", ""
	if kind == "github" {
		switch r.Header.Get("X-GitHub-Event") {
		case "ping":
			writeJSON(w, http.StatusOK, map[string]string{"status": "pong"})
			return
		case "push":
		default:
			writeJSON(w, http.StatusOK, map[string]string{"status": "ignored: only push events start builds"})
			return
		}
		var push struct {
			Ref   string `json:"ref"`
			After string `json:"after"`
		}
		if err := json.Unmarshal(body, &push); err != nil {
			status(w, http.StatusBadRequest, api.ReasonBadRequest, "the push event is not JSON")
			return
		}
		if g := bc.Spec.Source.Git; g != nil && g.Ref != "" && push.Ref != "refs/heads/"+g.Ref {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ignored: push to " + push.Ref + ", the build follows " + g.Ref})
			return
		}
		cause, ref = "GitHubWebhook", push.After
	}
	if ref != "" && !commitRe.MatchString(ref) {
		status(w, http.StatusBadRequest, api.ReasonBadRequest, "the push event's commit is not a 40-digit hex id")
		return
	}
	b, err := instantiateAt(r.Context(), h.Store, ns, name, "", cause, ref)
	if err != nil {
		status(w, http.StatusInternalServerError, api.ReasonInternal, "starting the build: "+err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"build": b.Name})
}

// triggerSecret is a webhook trigger's secret: inline, or the
// WebHookSecretKey of the Secret its secretReference names. "" when there
// is none, which matches nothing.
func (h *Webhooks) triggerSecret(ctx context.Context, ns string, t api.BuildTrigger) string {
	if t.SecretReference == nil {
		return t.Secret
	}
	o, err := h.Store.Get(ctx, api.Secrets, ns, t.SecretReference.Name)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			slog.Warn("builders: reading a webhook's secret", "project", ns, "secret", t.SecretReference.Name, "err", err)
		}
		return ""
	}
	return string(o.(*api.Secret).Data[api.WebHookSecretKey])
}

// signedWith reports whether sig is GitHub's X-Hub-Signature-256 of body
// with secret.
func signedWith(secret string, body []byte, sig string) bool {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	return subtle.ConstantTimeCompare([]byte(want), []byte(sig)) == 1
}

func status(w http.ResponseWriter, code int, reason, msg string) {
	writeJSON(w, code, api.NewStatus(code, reason, "%s", msg))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
