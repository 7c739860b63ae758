package builders

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// Webhooks starts builds from outside: a generic webhook, and GitHub push
// events. The secret is part of the URL and must match a trigger's; GitHub
// deliveries must also carry a valid X-Hub-Signature-256 made with it.
//
//	POST /webhooks/namespaces/PROJECT/buildconfigs/NAME/SECRET/generic
//	POST /webhooks/namespaces/PROJECT/buildconfigs/NAME/SECRET/github
type Webhooks struct {
	Store *store.Store
}

const maxWebhookBody = 1 << 20

func (h *Webhooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		status(w, http.StatusMethodNotAllowed, api.ReasonMethodNotAllow, "webhooks take POST")
		return
	}
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/webhooks/"), "/"), "/")
	if len(parts) != 6 || parts[0] != "namespaces" || parts[2] != "buildconfigs" || (parts[5] != "generic" && parts[5] != "github") {
		status(w, http.StatusNotFound, api.ReasonNotFound, "webhook URLs are /webhooks/namespaces/PROJECT/buildconfigs/NAME/SECRET/generic or .../github")
		return
	}
	ns, name, secret, kind := parts[1], parts[3], parts[4], parts[5]
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
	matched := ""
	for _, t := range bc.Spec.Triggers {
		if t.Type == want && len(t.Secret) > 0 && subtle.ConstantTimeCompare([]byte(t.Secret), []byte(secret)) == 1 {
			matched = t.Secret
		}
	}
	if matched == "" {
		status(w, http.StatusForbidden, api.ReasonForbidden, "no webhook matches this URL and secret")
		return
	}
	cause, ref := "GenericWebhook", ""
	if kind == "github" {
		mac := hmac.New(sha256.New, []byte(matched))
		mac.Write(body)
		sig := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		if subtle.ConstantTimeCompare([]byte(sig), []byte(r.Header.Get("X-Hub-Signature-256"))) != 1 {
			status(w, http.StatusForbidden, api.ReasonForbidden, "X-Hub-Signature-256 does not match the body signed with the webhook secret")
			return
		}
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

func status(w http.ResponseWriter, code int, reason, msg string) {
	writeJSON(w, code, api.NewStatus(code, reason, "%s", msg))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
