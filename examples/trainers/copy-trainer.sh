#!/bin/sh
# A stand-in trainer that shows the protocol qsteer speaks with external trainers (README:
# "Fine-tuning with your own trainer"). It does not train: it copies the model unchanged and
# prints a made-up, falling loss so the progress bar, the log and the loss chart have
# something to show. Replace the copy with your training code.
#
#   qsteer finetune model.onnx --data DIR --epochs 2 \
#     --trainer 'sh examples/trainers/copy-trainer.sh {input} {output} {epochs} 5'
#
# Usage: copy-trainer.sh INPUT OUTPUT [EPOCHS] [STEPS_PER_EPOCH]
set -eu
input=$1
output=$2
epochs=${3:-2}
steps=${4:-5}

# Any line that is not a JSON object goes to the job log as text; so does stderr.
echo "copy-trainer: $input -> $output, $epochs epoch(s) of $steps step(s)"
epoch=1
while [ "$epoch" -le "$epochs" ]; do
    step=1
    while [ "$step" -le "$steps" ]; do
        # Progress: one JSON object per line, any of epoch, step, steps, epochs, loss,
        # metric, lr.
        loss=$(awk -v e="$epoch" -v s="$step" -v n="$steps" 'BEGIN { printf "%.4f", 1 / ((e - 1) * n + s) }')
        printf '{"epoch": %d, "step": %d, "steps": %d, "epochs": %d, "loss": %s, "lr": 0.001}\n' \
            "$epoch" "$step" "$steps" "$epochs" "$loss"
        step=$((step + 1))
    done
    # The trainer's own validation metric at the end of the epoch.
    printf '{"epoch": %d, "metric": 0.9}\n' "$epoch"
    echo "copy-trainer: epoch $epoch done" >&2
    epoch=$((epoch + 1))
done

# The result: a model with the same graph (inputs and outputs) as the input. Exit 0 only
# when it is written; a non-zero exit fails the job with the last lines of this output.
cp "$input" "$output"
