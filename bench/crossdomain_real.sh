#!/usr/bin/env bash
# Cross-domain adapter benchmark on the real datasets (configs/crossdomain/real.yaml), end to end:
# converts the three datasets and builds their MiniLM title stores when missing (each step is skipped or a
# cache hit when already done), then runs the benchmark. Extra arguments go to `mmrec bench crossdomain`:
#
#   bash bench/crossdomain_real.sh                       # the recipe as it is (about 30-40 min on 2 CPU cores)
#   bash bench/crossdomain_real.sh --transfer.seeds=[0] --transfer.max_epochs=3   # a quicker look
#
# Run from the repository root; ../shared/data must hold the research datasets (never copied into the repo).
set -euo pipefail
MMREC=${MMREC:-.venv/bin/mmrec}
DATA=${SHARED_DATA:-../shared/data}
[ -d "$DATA" ] || { echo "error: $DATA not found (set SHARED_DATA to the research datasets folder)" >&2; exit 1; }

[ -f data/beauty/dataset.json ] || "$MMREC" data prepare s3rec "$DATA/amazon2014-beauty/s3rec/Beauty.txt" \
    --datamaps "$DATA/amazon2014-beauty/p5/beauty_datamaps.json" \
    --item_table "$DATA/amazon2014-beauty/derived/Beauty_items.tsv" --out data/beauty
[ -f data/ml-100k/dataset.json ] || "$MMREC" data prepare movielens "$DATA/ml-100k" --out data/ml-100k
[ -f data/instruments2018/dataset.json ] || "$MMREC" data prepare seq-tsv \
    "$DATA/amazon2018-instruments/am_Musical_Instruments_users_10K.tsv" \
    --titles "$DATA/amazon2018-instruments/Musical_Instruments_items.tsv" --items interacted \
    --name instruments2018 --out data/instruments2018

"$MMREC" embed --config configs/embed/beauty.yaml --no_progress
"$MMREC" embed --config configs/embed/crossdomain_ml100k.yaml --no_progress
"$MMREC" embed --config configs/embed/crossdomain_instruments.yaml --no_progress

"$MMREC" bench crossdomain --config configs/crossdomain/real.yaml "$@"
