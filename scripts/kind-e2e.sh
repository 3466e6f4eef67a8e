#!/usr/bin/env bash
# End to end on a local kind cluster shaped like production:
#   create the cluster (manifests/kind/), install Kubeflow Pipelines (manifests/kfp/) and MLflow
#   (manifests/mlflow/), build the images and load them into the nodes, make the GPU-pool worker
#   advertise a fake nvidia.com/gpu, `digits submit --wait` the bundled sample, then check that
#   the training pod, and only it, ran on the GPU-pool worker and that MLflow holds the run and
#   the `champion` alias of the registered model.
#
#   bash scripts/kind-e2e.sh
#
# Needs kind, kubectl, a Docker daemon, network access (kustomize fetches KFP's manifests, the
# nodes pull KFP's, MLflow's and PostgreSQL's images) and the project installed in .venv
# (bash scripts/bootstrap.sh). Environment:
#   KEEP_CLUSTER=1          keep the cluster (and its port-forwards' targets) when done
#   KIND_CLUSTER=NAME       cluster name (default digits-e2e)
#   KIND_NODE_IMAGE=IMAGE   kindest/node image (default: the installed kind's own)
#   FAKE_GPU=operator|patch how the GPU worker advertises nvidia.com/gpu (default operator):
#                           `operator` installs Run:ai's fake GPU operator with Helm, as Kubeflow
#                           Pipelines' own CI does; `patch` adds the extended resource to the
#                           node's status capacity (needs nothing but kubectl)
#   KFP_PORT / MLFLOW_PORT  local ports of the port-forwards (default 8080 / 5000)
#   EPOCHS                  training epochs of the submitted run (default 1)
#
# Assumes scripts/build_images.sh prints the image arguments of `digits compile` and
# `digits submit` as `--image REF` and `--train-image REF`.
set -euo pipefail
cd "$(dirname "$0")/.."

cluster="${KIND_CLUSTER:-digits-e2e}"
fake_gpu="${FAKE_GPU:-operator}"
kfp_port="${KFP_PORT:-8080}"
mlflow_port="${MLFLOW_PORT:-5000}"
epochs="${EPOCHS:-1}"
model_name="digits-cnn"
fake_gpu_chart_version="0.0.59" # the chart version Kubeflow Pipelines' CI pins
digits=".venv/bin/digits"
python=".venv/bin/python"
forward_pids=()

log() { printf 'kind-e2e: %s\n' "$*" >&2; }
fail() {
  log "FAILED: $*"
  exit 1
}

cleanup() {
  local status=$?
  for pid in "${forward_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  if [[ "${KEEP_CLUSTER:-0}" == 1 ]]; then
    log "keeping cluster $cluster (kind delete cluster --name $cluster)"
  else
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  exit "$status"
}

require() {
  command -v "$1" >/dev/null || fail "$1 not found on PATH; $2"
}

# Kubernetes secret values: hex, so they are JSON- and URL-safe.
random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

port_forward() { # namespace service local_port remote_port
  kubectl -n "$1" port-forward "service/$2" "$3:$4" >/dev/null 2>&1 &
  forward_pids+=("$!")
}

wait_for_http() { # url
  for _ in $(seq 60); do
    if curl -fsS -o /dev/null "$1"; then return 0; fi
    sleep 2
  done
  fail "$1 did not answer"
}

require kind "see https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
require kubectl "install kubectl >= 1.27 (kubectl kustomize renders the manifests)"
require docker "install Docker"
require curl "install curl"
docker info >/dev/null 2>&1 || fail "no Docker daemon answers (docker info)"
[[ -x "$digits" ]] || fail "$digits missing; run bash scripts/bootstrap.sh"
case "$fake_gpu" in
  operator) require helm "install Helm 3, or set FAKE_GPU=patch" ;;
  patch) ;;
  *) fail "FAKE_GPU must be operator or patch, not '$fake_gpu'" ;;
esac

trap cleanup EXIT

# ---- cluster ------------------------------------------------------------------------------------
log "creating kind cluster $cluster"
create_args=(--name "$cluster" --config manifests/kind/cluster.yaml --wait 5m)
if [[ -n "${KIND_NODE_IMAGE:-}" ]]; then create_args+=(--image "$KIND_NODE_IMAGE"); fi
kind create cluster "${create_args[@]}"
kubectl config use-context "kind-$cluster" >/dev/null

mapfile -t gpu_nodes < <(kubectl get nodes -l nvidia.com/gpu.present=true -o name)
[[ ${#gpu_nodes[@]} == 1 ]] || fail "expected one GPU-pool node, found ${#gpu_nodes[@]}"
gpu_node="${gpu_nodes[0]#node/}"

# ---- a fake GPU on the GPU-pool worker ----------------------------------------------------------
log "making $gpu_node advertise nvidia.com/gpu ($fake_gpu)"
if [[ "$fake_gpu" == operator ]]; then
  kubectl label node "$gpu_node" run.ai/simulated-gpu-node-pool=default --overwrite
  helm repo add fake-gpu-operator \
    https://runai.jfrog.io/artifactory/api/helm/fake-gpu-operator-charts-prod --force-update
  helm repo update fake-gpu-operator
  helm upgrade -i fake-gpu-operator fake-gpu-operator/fake-gpu-operator \
    --version "$fake_gpu_chart_version" --namespace gpu-operator --create-namespace \
    --set topology.nodePools.default.gpuCount=1 --wait --timeout 5m
else
  # An extended resource on the node's status: the kubelet keeps it and the scheduler counts it.
  kubectl patch node "$gpu_node" --subresource=status --type=json \
    -p '[{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "1"}]'
fi
for _ in $(seq 60); do
  allocatable="$(kubectl get node "$gpu_node" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}')"
  if [[ -n "$allocatable" && "$allocatable" != 0 ]]; then break; fi
  sleep 5
done
[[ -n "$allocatable" && "$allocatable" != 0 ]] || fail "$gpu_node never advertised nvidia.com/gpu"

# ---- images -------------------------------------------------------------------------------------
log "building the images"
build_output="$(scripts/build_images.sh --registry kind.local --tag e2e)"
printf '%s\n' "$build_output"
image="$(grep -oE -- '--image[= ][^ ]+' <<<"$build_output" | head -n1 | sed -E 's/^--image[= ]//')"
train_image="$(grep -oE -- '--train-image[= ][^ ]+' <<<"$build_output" | head -n1 |
  sed -E 's/^--train-image[= ]//')"
[[ -n "$image" && -n "$train_image" ]] ||
  fail "scripts/build_images.sh printed no --image / --train-image arguments"
kind load docker-image --name "$cluster" "$image" "$train_image"
# The pipeline's pods read the bundled sample from inside the image (the package installs it).
sample_dir="$(docker run --rm "$image" python -c \
  'from importlib.resources import files; print(files("digits") / "sample_data")')"

# ---- Kubeflow Pipelines and MLflow --------------------------------------------------------------
log "installing Kubeflow Pipelines (manifests/kfp)"
kubectl apply -k manifests/kfp/cluster-scoped
kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kubectl apply -k manifests/kfp

log "installing MLflow (manifests/mlflow)"
kubectl create namespace mlflow
kubectl -n mlflow create secret generic mlflow-postgres --from-literal=password="$(random_hex 24)"
kubectl -n mlflow create secret generic mlflow-s3 \
  --from-literal=access-key-id="$(random_hex 10)" \
  --from-literal=secret-access-key="$(random_hex 20)"
kubectl apply -k manifests/mlflow

log "waiting for MLflow and Kubeflow Pipelines"
kubectl -n mlflow rollout status statefulset/postgres --timeout=10m
kubectl -n mlflow rollout status deployment/seaweedfs --timeout=10m
kubectl -n mlflow wait --for=condition=complete job/mlflow-bucket --timeout=10m
kubectl -n mlflow rollout status deployment/mlflow --timeout=10m
kubectl -n kubeflow wait --for=condition=Available deployment --all --timeout=20m

port_forward kubeflow ml-pipeline-ui "$kfp_port" 80
port_forward mlflow mlflow "$mlflow_port" 5000
kfp_url="http://localhost:$kfp_port"
mlflow_url="http://localhost:$mlflow_port"
wait_for_http "$kfp_url/apis/v2beta1/healthz"
wait_for_http "$mlflow_url/health"

# ---- the run ------------------------------------------------------------------------------------
log "submitting the bundled sample to $kfp_url"
submit_log="$(mktemp)"
"$digits" submit --host "$kfp_url" --experiment digits-e2e --run-name "kind-e2e-$(date +%s)" \
  --image "$image" --train-image "$train_image" \
  --param train_data_uri="$sample_dir/train.csv.gz" \
  --param predict_data_uri="$sample_dir/test.csv.gz" \
  --param epochs="$epochs" \
  --wait | tee "$submit_log"
run_id="$(grep -oE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' "$submit_log" |
  head -n1 || true)"
rm -f "$submit_log"
[[ -n "$run_id" ]] || fail "digits submit printed no run id"
log "run $run_id succeeded"

# ---- placement: the training pod, and only it, on the GPU-pool worker ---------------------------
workflow="$(kubectl -n kubeflow get workflows -l "pipeline/runid=$run_id" \
  -o jsonpath='{.items[0].metadata.name}')"
[[ -n "$workflow" ]] || fail "no Argo workflow labelled pipeline/runid=$run_id"
# One line per pod: node, Argo node name (names the pipeline task), nvidia.com/gpu limit.
pods="$(kubectl -n kubeflow get pods -l "workflows.argoproj.io/workflow=$workflow" -o jsonpath='{range .items[*]}{.spec.nodeName}{"\t"}{.metadata.annotations.workflows\.argoproj\.io/node-name}{"\t"}{.spec.containers[*].resources.limits.nvidia\.com/gpu}{"\n"}{end}')"
printf '%s\n' "$pods" >&2
on_gpu_node="$(awk -F'\t' -v node="$gpu_node" '$1 == node' <<<"$pods")"
[[ -n "$on_gpu_node" ]] || fail "no pod of run $run_id ran on $gpu_node"
if awk -F'\t' '$2 !~ /train-model/ || $3 == ""' <<<"$on_gpu_node" | grep -q .; then
  fail "pods other than train-model's ran on $gpu_node: $on_gpu_node"
fi
if awk -F'\t' -v node="$gpu_node" '$1 != node && $3 != ""' <<<"$pods" | grep -q .; then
  fail "a pod requesting nvidia.com/gpu ran outside the GPU pool"
fi
log "placement ok: only train-model ran on $gpu_node"

# ---- MLflow: the run and the champion alias -----------------------------------------------------
alias_json="$(curl -fsS --get "$mlflow_url/api/2.0/mlflow/registered-models/alias" \
  --data-urlencode "name=$model_name" --data-urlencode "alias=champion")" ||
  fail "MLflow has no champion alias on $model_name"
mlflow_run_id="$("$python" -c 'import json, sys; print(json.load(sys.stdin)["model_version"]["run_id"])' <<<"$alias_json")"
run_json="$(curl -fsS --get "$mlflow_url/api/2.0/mlflow/runs/get" \
  --data-urlencode "run_id=$mlflow_run_id")" || fail "MLflow has no run $mlflow_run_id"
tagged_run="$("$python" -c 'import json, sys
tags = json.load(sys.stdin)["run"]["data"].get("tags", [])
print({t["key"]: t["value"] for t in tags}.get("kfp_pipeline_run_id", ""))' <<<"$run_json")"
[[ "$tagged_run" == "$run_id" ]] ||
  fail "champion's MLflow run $mlflow_run_id belongs to pipeline run '$tagged_run', not $run_id"
log "MLflow ok: $model_name@champion comes from run $mlflow_run_id of pipeline run $run_id"
log "passed"
