# Kubernetes verbs. Included by the Makefile (`include k8s/k8s.mk`), whose PYTHON it uses.
#
#   make image [IMAGE=...]           build the project image (k8s/Dockerfile)
#   make image-push [IMAGE=...]      build and push it
#   make k8s-env                     create the git-ignored credential env files (random values)
#   make k8s-render                  render every overlay into runs/k8s/<overlay>.yaml
#   make k8s-validate                render, then validate every object (schemas, checkov)
#   make k8s-apply [OVERLAY=dev]     kubectl apply -k k8s/overlays/$(OVERLAY)
#   make k8s-final [OVERLAY=dev]     start the final RayJob (after monolith-tune succeeded)
#   make k8s-delete [OVERLAY=dev]    kubectl delete -k (MinIO's volume is kept)

# checkov and kubernetes-validate live in their own venv (git-ignored, like .venv): their
# dependency sets are large and pin versions that clash with the project's.
K8S_VENV  := .venv-k8s
K8S_BIN   := $(K8S_VENV)/bin
K8S_STAMP := $(K8S_VENV)/.installed-stamp
K8S_OUT   ?= runs/k8s
K8S_KUBERNETES_VERSION ?= 1.31
OVERLAY   ?= dev
KUBECTL   ?= kubectl
DOCKER    ?= docker

# The image tag carries the project and the Ray version, both read from pyproject.toml:
# monolith-tune:<version>-ray<ray version> (the overlays' `images:` name the same tag).
PROJECT_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
RAY_VERSION     := $(shell sed -n 's/.*"ray\[[^]]*\]==\([^"]*\)".*/\1/p' pyproject.toml)
IMAGE ?= monolith-tune:$(PROJECT_VERSION)-ray$(RAY_VERSION)

K8S_ENV_FILES := k8s/base/minio-root.env k8s/base/monolith-s3.env
K8S_NAMESPACE  = $(shell sed -n 's/^namespace: *//p' k8s/overlays/$(OVERLAY)/kustomization.yaml)

.PHONY: image image-push k8s-env k8s-render k8s-validate k8s-apply k8s-final k8s-delete \
	k8s-check-env

# pip -qq: errors only, as for the main venv (see the Makefile's install target).
$(K8S_STAMP): k8s/requirements-validate.txt
	$(PYTHON) -m venv $(K8S_VENV)
	$(K8S_BIN)/python -m pip install -qq --upgrade pip
	$(K8S_BIN)/python -m pip install -qq -r k8s/requirements-validate.txt
	touch $@

image:
	$(DOCKER) build -t $(IMAGE) --build-arg GIT_COMMIT=$(GIT_COMMIT) -f k8s/Dockerfile .

image-push: image
	$(DOCKER) push $(IMAGE)

k8s-env:
	$(PYTHON) k8s/validate.py init-env

# Rendering uses throw-away credentials in a temporary copy of k8s/: it works on a fresh
# clone and its output never holds the real ones.
k8s-render:
	$(PYTHON) k8s/validate.py render --out $(K8S_OUT)

k8s-validate: $(K8S_STAMP)
	$(K8S_BIN)/python k8s/validate.py check --out $(K8S_OUT) \
		--kubernetes-version $(K8S_KUBERNETES_VERSION)

k8s-check-env:
	@for f in $(K8S_ENV_FILES); do \
		test -f $$f || { echo "$$f is missing: run 'make k8s-env' (random values) or copy" \
			"$$f.example to $$f and set its values (README.md, "Run on Kubernetes")"; exit 1; }; \
	done

k8s-apply: k8s-check-env
	$(KUBECTL) apply -k k8s/overlays/$(OVERLAY)

k8s-final:
	$(KUBECTL) -n $(K8S_NAMESPACE) patch rayjob monolith-final --type merge \
		-p '{"spec":{"suspend":false}}'

k8s-delete: k8s-check-env
	$(KUBECTL) delete -k k8s/overlays/$(OVERLAY) --ignore-not-found
