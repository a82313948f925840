#!/usr/bin/env bash
# Download the LPR750K release (about 370 GB of tar files) and unpack it into the layout the
# videotoshop builder reads:
#
#   DEST/annotations/  training_videoinfo_750k.txt, query_tenframes.json, gallery_main.txt, ...
#   DEST/query/<clip_id>/...   DEST/gallery/<live_id>/...
#   DEST/training_image/       DEST/training_video_00 ... training_video_07/
#
# Usage: bash scripts/download_lpr750k.sh DEST [PART ...]
#   PARTS default to all: query gallery annotations training_image training_video_00 .. _07.
# Environment:
#   LPR750K_BASE_URL  where the tar files live (default https://csip.fzu.edu.cn/lpr4m)
#   KEEP_TARS=0       delete each tar after it was unpacked (default 1: keep)
#
# Resumable and idempotent: downloads continue where they stopped (curl -C - / wget -c); a part
# whose download finished gets DEST/.downloads/<part>.tar.done, an unpacked part gets
# DEST/.downloads/<part>.unpacked, and both steps are skipped on the next run.
set -euo pipefail

if [ $# -lt 1 ]; then
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
DEST=$1
shift
BASE_URL=${LPR750K_BASE_URL:-https://csip.fzu.edu.cn/lpr4m}
BASE_URL=${BASE_URL%/}
KEEP_TARS=${KEEP_TARS:-1}
if [ $# -gt 0 ]; then
  PARTS=("$@")
else
  PARTS=(query gallery annotations training_image)
  for i in 00 01 02 03 04 05 06 07; do PARTS+=("training_video_$i"); done
fi

mkdir -p "$DEST/.downloads"
DOWNLOADS=$DEST/.downloads

fetch() {  # fetch URL FILE: resumable download
  local url=$1 file=$2
  if command -v curl >/dev/null 2>&1; then
    curl --fail --location --retry 5 --retry-delay 10 --continue-at - --output "$file" "$url"
  elif command -v wget >/dev/null 2>&1; then
    wget --continue --tries=5 --output-document="$file" "$url"
  else
    echo "download_lpr750k: neither curl nor wget is installed" >&2
    exit 1
  fi
}

failed=()
for part in "${PARTS[@]}"; do
  tarball=$DOWNLOADS/$part.tar
  if [ -e "$DOWNLOADS/$part.unpacked" ]; then
    echo "download_lpr750k: $part already unpacked, skipping"
    continue
  fi
  if [ ! -e "$tarball.done" ]; then
    echo "download_lpr750k: fetching $BASE_URL/$part.tar"
    if ! fetch "$BASE_URL/$part.tar" "$tarball"; then
      echo "download_lpr750k: download of $part failed; rerun to resume" >&2
      failed+=("$part")
      continue
    fi
    touch "$tarball.done"
  fi
  echo "download_lpr750k: unpacking $part.tar into $DEST"
  if ! tar -xf "$tarball" -C "$DEST"; then
    echo "download_lpr750k: $tarball is not a complete tar; delete it and its .done marker to download again" >&2
    failed+=("$part")
    continue
  fi
  if [ ! -e "$DEST/$part" ]; then
    echo "download_lpr750k: warning: $part.tar did not create $DEST/$part (top-level entries: $(tar -tf "$tarball" | cut -d/ -f1 | sort -u | head -5 | tr '\n' ' '))" >&2
  fi
  touch "$DOWNLOADS/$part.unpacked"
  if [ "$KEEP_TARS" = 0 ]; then
    rm -f "$tarball"
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "download_lpr750k: ${#failed[@]} part(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "download_lpr750k: ${#PARTS[@]} part(s) ready in $DEST"
