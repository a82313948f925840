#!/usr/bin/env bash
# Download LPR4M with img2dataset from the four URL lists (sent by e-mail after signing the
# agreement) and convert the result into the LPR4M layout the videotoshop builder reads.
#
# Usage: bash scripts/download_lpr4m.sh URL_DIR DEST [files|webdataset]
#   URL_DIR holds training_frame_url_full_*.txt, training_image_url_full_*.txt,
#   test_frame_url_*.txt and test_image_url_*.txt. Put the annotation files of the release
#   (training_videoinfo_*.txt, test_*.json, ...) into DEST/annotations/ first: the conversion
#   reads test_liveid_to_gallery_*.json (live id of each test image) and
#   test_videoid_to_gtimage_*.json from there.
# Writes DEST/img2dataset/<list>/ (raw img2dataset shards, output format files by default), then
#   DEST/training_frames/<clip_id>/<frame_id>.jpg   DEST/training_images/<image_id>.jpg
#   DEST/query/<clip_id>/<frame_id>.jpg             DEST/gallery/<live_id>/<image_id>.jpg
#   DEST/annotations/query_tenframes.json, gallery_main.txt, <train files>_available.txt
#   DEST/img2dataset_report_{train,test}.json (failed downloads, clips without frames)
# Environment: LISTS (subset of: training_frame training_image test_frame test_image),
#   PROCESSES (default: number of cores), THREADS (128), IMAGE_SIZE (256), PYTHON (python),
#   IMG2DATASET (img2dataset), SKIP_CONVERT=1 (download only).
# Rerunning resumes: img2dataset --incremental_mode incremental skips finished shards and the
# conversion keeps files already written.
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
URL_DIR=$1
DEST=$2
FORMAT=${3:-files}
case "$FORMAT" in files|webdataset) ;; *) echo "download_lpr4m: output format must be files or webdataset" >&2; exit 2;; esac
PYTHON=${PYTHON:-python}
IMG2DATASET=${IMG2DATASET:-img2dataset}
PROCESSES=${PROCESSES:-$(nproc)}
THREADS=${THREADS:-128}
IMAGE_SIZE=${IMAGE_SIZE:-256}
LISTS=${LISTS:-training_frame training_image test_frame test_image}
HERE=$(cd "$(dirname "$0")" && pwd)

declare -A PATTERN=(
  [training_frame]="training_frame_url_*.txt"
  [training_image]="training_image_url_*.txt"
  [test_frame]="test_frame_url_*.txt"
  [test_image]="test_image_url_*.txt"
)

find_list() {  # find_list NAME -> the one URL list matching its pattern
  local matches=("$URL_DIR"/${PATTERN[$1]})
  if [ ! -e "${matches[0]}" ]; then
    echo "download_lpr4m: no ${PATTERN[$1]} in $URL_DIR" >&2
    exit 1
  fi
  if [ ${#matches[@]} -gt 1 ]; then
    echo "download_lpr4m: several ${PATTERN[$1]} in $URL_DIR: ${matches[*]}" >&2
    exit 1
  fi
  echo "${matches[0]}"
}

mkdir -p "$DEST/img2dataset" "$DEST/annotations"
for name in $LISTS; do
  list=$(find_list "$name")
  echo "download_lpr4m: img2dataset $list -> $DEST/img2dataset/$name ($FORMAT)"
  # keep_ratio: the shorter side becomes IMAGE_SIZE, so the annotated boxes stay valid.
  "$IMG2DATASET" --url_list="$list" --output_folder="$DEST/img2dataset/$name" \
    --input_format=txt --output_format="$FORMAT" --image_size="$IMAGE_SIZE" --resize_mode=keep_ratio \
    --number_sample_per_shard=50000 --timeout=10 --retries=0 --incremental_mode=incremental \
    --processes_count="$PROCESSES" --thread_count="$THREADS" --distributor=multiprocessing
done

if [ "${SKIP_CONVERT:-0}" = 1 ]; then
  exit 0
fi
train_inputs=()
test_inputs=()
for name in $LISTS; do
  case "$name" in
    training_*) train_inputs+=(--input "$DEST/img2dataset/$name") ;;
    test_*) test_inputs+=(--input "$DEST/img2dataset/$name") ;;
  esac
done
if [ ${#train_inputs[@]} -gt 0 ]; then
  annotation_args=()
  for annotation in "$DEST"/annotations/training_videoinfo_*.txt; do
    case "$annotation" in *_available.txt|*\*) continue ;; esac
    annotation_args+=(--train_annotation "$annotation")
  done
  "$PYTHON" "$HERE/img2dataset_to_lpr4m.py" "${train_inputs[@]}" --data_dir "$DEST" --split train "${annotation_args[@]}"
fi
if [ ${#test_inputs[@]} -gt 0 ]; then
  "$PYTHON" "$HERE/img2dataset_to_lpr4m.py" "${test_inputs[@]}" --data_dir "$DEST" --split test
fi
