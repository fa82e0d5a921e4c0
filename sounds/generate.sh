#!/usr/bin/env bash
# Regenerates every prompt listed in sounds/prompts.yaml, plus sounds/moh.wav and sounds/beep.wav.
#
#   sounds/generate.sh            # needs espeak-ng and sox (apt-get install espeak-ng sox)
#
# Output: sounds/<lang>/<name>.wav, 8 kHz mono 16-bit signed PCM, leading/trailing silence
# trimmed. Reproducible: sox runs without dither (-D) and with its fixed random seed (-R), so the
# same espeak-ng/sox versions give byte-identical files. Files not listed in prompts.yaml (e.g.
# real recordings dropped in by hand) are left alone.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
manifest="$here/prompts.yaml"
for tool in espeak-ng sox awk; do
    command -v "$tool" >/dev/null || { echo "generate.sh: $tool is required (apt-get install espeak-ng sox)" >&2; exit 1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# espeak-ng voice for a language code of the manifest.
voice() {
    case "$1" in
        en) echo en-gb ;;
        fr) echo fr-fr ;;
        *) echo "$1" ;;
    esac
}

# Flatten the manifest subset to "name<TAB>lang<TAB>text" lines.
awk '
    /^[[:space:]]*(#|$)/ { next }
    /^[A-Za-z0-9_-]+:[[:space:]]*$/ { name = $0; sub(/:.*/, "", name); next }
    /^  [a-z][a-z-]*:[[:space:]]*".*"[[:space:]]*$/ {
        lang = $1; sub(/:$/, "", lang)
        text = $0; sub(/^[^"]*"/, "", text); sub(/"[[:space:]]*$/, "", text)
        if (name == "") { printf "prompts.yaml:%d: language entry outside a prompt\n", NR > "/dev/stderr"; exit 1 }
        printf "%s\t%s\t%s\n", name, lang, text
        next
    }
    { printf "prompts.yaml:%d: cannot parse: %s\n", NR, $0 > "/dev/stderr"; exit 1 }
' "$manifest" > "$tmp/list"

count=0
while IFS=$'\t' read -r name lang text; do
    mkdir -p "$here/$lang"
    espeak-ng -v "$(voice "$lang")" -s 150 -w "$tmp/tts.wav" "$text"
    sox -D -R "$tmp/tts.wav" -r 8000 -c 1 -b 16 -e signed-integer "$here/$lang/$name.wav" \
        silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse pad 0.05 0.15
    count=$((count + 1))
done < "$tmp/list"

# Music on hold: a I-vi-IV-V progression of plucked chords, language neutral, about 8 s.
chords=("%-9 %-5 %-2" "%0 %-9 %-5" "%-4 %0 %-9" "%-2 %2 %-7")
parts=()
for i in "${!chords[@]}"; do
    set -- ${chords[$i]}
    sox -D -R -n -r 8000 -c 3 -b 16 "$tmp/chord$i.wav" synth 2 pluck "$1" pluck "$2" pluck "$3" \
        remix - fade q 0.02 2 0.6
    parts+=("$tmp/chord$i.wav")
done
sox -D -R "${parts[@]}" -r 8000 -c 1 -b 16 -e signed-integer "$here/moh.wav" gain -n -6

# Voicemail beep: 1 kHz for 300 ms, language neutral; 5 ms ramps so it does not click.
sox -D -R -n -r 8000 -c 1 -b 16 -e signed-integer "$here/beep.wav" synth 0.3 sine 1000 \
    fade h 0.005 0.3 0.005 gain -n -6

echo "generate.sh: $count prompts, moh.wav and beep.wav written under $here"
