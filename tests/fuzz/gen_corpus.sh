#!/bin/sh
# Regenerate the seed corpora under tests/fuzz/corpus/ (they are committed;
# run this only to change them). Needs ffmpeg with libx264/libvpx/libwebp/
# libtheora, python3, a C compiler and libjpeg headers. Run from anywhere.
#
# Seeds are small on purpose: libFuzzer mutates faster and reaches deeper
# with inputs of a few hundred bytes to a few KiB.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
C="$HERE/corpus"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
ff() { ffmpeg -hide_banner -nostdin -loglevel error -y "$@"; }

mkdir -p "$C/multipart" "$C/base64" "$C/json" "$C/image" "$C/tokenizer" "$C/video"

# ---------------------------------------------------------------- multipart
# "<Content-Type value>\n<body>"
M="$C/multipart"
printf 'multipart/form-data; boundary=XyZ\n--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nclip\r\n--XyZ--\r\n' >"$M/field.txt"
printf 'multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW\n------WebKitFormBoundary7MA4YWxkTrZu0gW\r\nContent-Disposition: form-data; name="text"\r\n\r\na photo of a cat\r\n------WebKitFormBoundary7MA4YWxkTrZu0gW\r\nContent-Disposition: form-data; name="image"; filename="cat.png"\r\nContent-Type: image/png\r\n\r\n\211PNG\r\n\032\n\0\0\0\rIHDR\r\n------WebKitFormBoundary7MA4YWxkTrZu0gW--\r\n' >"$M/browser.txt"
printf 'multipart/form-data; boundary=b\n--b\nContent-Disposition: form-data; name=a\n\nline one\nline two\n--b\nContent-Disposition: form-data; name=b; filename=x.bin\n\n\0\1\2\r\n--\n--b--\n' >"$M/lf.txt"
printf 'multipart/form-data; charset=utf-8; boundary="a b:c"\npreamble\r\n--a b:c \t\r\nContent-Disposition: form-data;\r\n name="f"; filename*=UTF-8'"''"'%%C3%%A9t%%C3%%A9.jpg; filename="a\\"b.jpg"\r\ncontent-type: image/jpeg\r\n\r\n\377\330\377\340\r\n--a b:cX\r\n--a b:c\r\nContent-Disposition: form-data; name="normalize"\r\n\r\nfalse\r\n--a b:c--\r\nepilogue' >"$M/quirks.txt"
printf 'Multipart/Form-Data; BOUNDARY=z\n--z--\r\n' >"$M/empty.txt"
printf 'multipart/form-data; boundary=q\n--q\r\nContent-Disposition: form-data; name="images"; filename="a"\r\n\r\n\r\n--q\r\nContent-Disposition: form-data; name="images"; filename=""\r\n\r\n-\r\n--q\r\nContent-Disposition: form-data; name="images"; filename="c"\r\nContent-Type: application/octet-stream\r\n\r\n--q-\r\n--q--' >"$M/many.txt"
printf 'multipart/form-data; boundary=q\n--q\r\nContent-Type: text/plain\r\n\r\nno disposition\r\n--q--\r\n' >"$M/nodisp.txt"
printf 'multipart/mixed; boundary=q\n--q--\r\n' >"$M/mixed.txt"

# ---------------------------------------------------------------- base64
B="$C/base64"
printf 'aGVsbG8gd29ybGQ=' >"$B/plain.txt"
printf 'aGVsbG8gd29ybGQ' >"$B/unpadded.txt"
printf 'aGVs\r\nbG8g\n d29y\tbGQ=' >"$B/spaces.txt"
printf 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC' >"$B/datauri.txt"
printf 'data:text/plain,not-base64' >"$B/datauri-plain.txt"
printf '_-_-AQID' >"$B/urlsafe.txt"
printf 'QQ==QQ==' >"$B/pad-middle.txt"
printf 'A' >"$B/one.txt"
head -c 300 "$ROOT/tests/fixtures/clip/images/tiny31x17.png" >"$B/raw.bin"

# ---------------------------------------------------------------- json
J="$C/json"
printf '{"model":"clip","input":"a photo of a cat"}' >"$J/openai-str.json"
printf '{"input":["a dog","two cats",""],"encoding_format":"base64","dimensions":64}' >"$J/openai-list.json"
printf '{"input":[49406,320,1125,49407],"model":null}' >"$J/openai-ids.json"
printf '{"input":[[49406,49407],[1,2,3]],"encoding_format":"float"}\n' >"$J/openai-idss.json"
printf '{"texts":["caf\\u00e9","\\ud83d\\ude00 emoji","tab\\tnew\\nline\\u0000nul"]}' >"$J/text.json"
printf '{"images":["iVBORw0KGgo=","data:image/png;base64,/9j/4AA=","https://example.com/x.png"],"normalize":false}' >"$J/images.json"
printf '{"image":"R0lGODlhAQABAAAAACw=","text":"a cat","text_weight":0.25,"image_weight":1e0,"return_parts":true}' >"$J/multimodal.json"
printf '{"a":{"b":[1,-2.5e-3,true,false,null,{"c":[[[]]]}]},"n":1.7976931348623157e308,"s":"\\"\\\\\\/\\b\\f"}  \r\n' >"$J/nested.json"
printf '[1,2,3]' >"$J/array.json"
printf '{"input":"x"} trailing' >"$J/trailing.json"

# ---------------------------------------------------------------- tokenizer
T="$C/tokenizer"
printf 'a photo of a cat' >"$T/simple.txt"
printf 'Hello, World!! It'"'"'s 3.14159 -- "quoted" (parens) [brackets] {braces}' >"$T/punct.txt"
printf 'caf\303\251 na\303\257ve \303\205ngstr\303\266m \303\237 \304\260stanbul' >"$T/accents.txt"
printf '\344\270\255\346\226\207\345\255\227 \346\227\245\346\234\254\350\252\236 \355\225\234\352\265\255\354\226\264' >"$T/cjk.txt"
printf '\360\237\230\200\360\237\221\215\360\237\217\275 \342\235\244\357\270\217 emoji' >"$T/emoji.txt"
printf '<|startoftext|>hi<|endoftext|> [MASK] [CLS]' >"$T/special.txt"
printf '  leading\t\ttabs\r\nand\nnewlines   \357\274\241\357\274\242 \357\267\272 \342\204\242 \302\275' >"$T/spaces.txt"
printf 'unaffable running played playing dogs cats abc the' >"$T/wordpiece.txt"
printf 'invalid \377\376 utf8 \300\200 \355\240\200' >"$T/invalid.bin"
python3 -c 'import sys; sys.stdout.write("supercalifragilisticexpialidocious " * 3 + "a" * 300)' >"$T/long.txt"

# ---------------------------------------------------------------- image
I="$C/image"
SRC="testsrc2=s=24x16:d=1"
ff -f lavfi -i "$SRC" -frames:v 1 -c:v mjpeg -pix_fmt yuvj420p -q:v 5 "$I/testsrc420.jpg"
ff -f lavfi -i "$SRC" -frames:v 1 -c:v mjpeg -pix_fmt yuvj444p -q:v 5 "$I/testsrc444.jpg"
ff -f lavfi -i "$SRC" -frames:v 1 -c:v mjpeg -pix_fmt yuvj422p -vf scale=17:13 "$I/odd422.jpg"
ff -f lavfi -i "$SRC" -frames:v 1 -c:v png -pix_fmt rgb24 "$I/rgb.png"
ff -f lavfi -i "$SRC" -frames:v 1 -c:v png -pix_fmt rgba "$I/rgba.png"
ff -f lavfi -i "$SRC" -frames:v 1 -c:v png -pix_fmt gray "$I/gray.png"
ff -f lavfi -i "$SRC" -frames:v 1 -c:v png -pix_fmt gray16be "$I/gray16.png"
ff -f lavfi -i "$SRC" -frames:v 1 -c:v png -pix_fmt rgb48be "$I/rgb48.png"
ff -f lavfi -i "$SRC" -frames:v 1 -c:v png -pix_fmt ya8 "$I/graya.png"
ff -f lavfi -i "$SRC" -frames:v 1 -c:v png -pix_fmt monob "$I/mono.png"
ff -f lavfi -i "$SRC" -frames:v 1 -c:v png -pix_fmt pal8 "$I/pal8.png"
ff -f lavfi -i "$SRC" -frames:v 1 -c:v libwebp -lossless 0 -q:v 50 "$I/lossy.webp"
ff -f lavfi -i "$SRC" -frames:v 1 -c:v libwebp -lossless 1 "$I/lossless.webp"
ff -f lavfi -i "$SRC,format=rgba,colorchannelmixer=aa=0.5" -frames:v 1 -c:v libwebp -lossless 0 "$I/alpha.webp"
ff -f lavfi -i "testsrc2=s=16x12:r=4:d=1" -c:v libwebp_anim -lossless 1 -loop 0 "$I/anim.webp"
ff -f lavfi -i "$SRC" -frames:v 1 "$I/still.gif"
ff -f lavfi -i "testsrc2=s=16x12:r=4:d=1" -vf "split[a][b];[a]palettegen=max_colors=16:reserve_transparent=1[p];[b][p]paletteuse" "$I/anim.gif"
# progressive, grayscale and CMYK JPEGs: ffmpeg cannot write them, libjpeg can
cat >"$TMP/jpg.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <jpeglib.h>
/* jpg OUT W H MODE: MODE p = progressive RGB, g = grayscale, c = Adobe CMYK */
int main(int argc, char **argv)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    int w = atoi(argv[2]), h = atoi(argv[3]), mode = argv[4][0];
    int nc = mode == 'g' ? 1 : mode == 'c' ? 4 : 3;
    FILE *f = fopen(argv[1], "wb");
    JSAMPLE *row = malloc((size_t)w * nc);
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = w, c.image_height = h, c.input_components = nc;
    c.in_color_space = mode == 'g' ? JCS_GRAYSCALE : mode == 'c' ? JCS_CMYK : JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 70, TRUE);
    if (mode == 'p') jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w * nc; x++) row[x] = (JSAMPLE)((x * 37 + y * 11) & 255);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(f);
    return 0;
}
EOF
cc -o "$TMP/jpg" "$TMP/jpg.c" -ljpeg
"$TMP/jpg" "$I/progressive.jpg" 20 14 p
"$TMP/jpg" "$I/gray.jpg" 9 7 g
"$TMP/jpg" "$I/cmyk.jpg" 8 8 c
# an Adam7-interlaced PNG with a tRNS chunk (ffmpeg writes neither)
python3 - "$I/interlaced.png" <<'EOF'
import struct, sys, zlib
w, h = 7, 5
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
raw = b""
for (x0, y0, dx, dy) in [(0,0,8,8),(4,0,8,8),(0,4,4,8),(2,0,4,4),(0,2,2,4),(1,0,2,2),(0,1,1,2)]:
    xs = range(x0, w, dx)
    for y in range(y0, h, dy):
        if len(xs): raw += b"\0" + bytes(v for x in xs for v in ((x * 40) & 255, (y * 60) & 255, 128))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1))
png += chunk(b"tRNS", struct.pack(">HHH", 0, 0, 128)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
EOF
cp "$ROOT/tests/fixtures/clip/images/tiny31x17.png" "$I/"
cp "$ROOT/tests/fixtures/clip/images/gray100x80.png" "$I/"
# issue 12 item 4: a progressive JPEG past the scan limit, a PNG whose
# zTXt chunks inflate to 300 KB (skipped, never inflated)
cc -O2 -o "$TMP/gen_hostile_jpeg" "$ROOT/tests/fixtures/gen_hostile_jpeg.c" -ljpeg
"$TMP/gen_hostile_jpeg" 16 16 120 "$I/manyscans.jpg"
python3 - "$I/ztxt.png" <<'EOF'
import struct, sys, zlib
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
z = chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"\0" * 100000, 9))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0)) + z * 3
png += chunk(b"IDAT", zlib.compress(b"\0\1\2\0\3\4")) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
EOF

# ---------------------------------------------------------------- video
V="$C/video"
VS="testsrc2=s=32x24:r=8:d=1"
ff -f lavfi -i "$VS" -c:v libx264 -preset veryfast -bf 2 -g 4 -pix_fmt yuv420p "$V/h264.mp4"
ff -f lavfi -i "$VS" -c:v libx264 -preset veryfast -metadata:s:v rotate=90 "$V/rot90.mp4"
ff -f lavfi -i "$VS" -vf setsar=2 -c:v libx264 -preset veryfast -f matroska "$V/sar2.mkv"
ff -f lavfi -i "$VS" -c:v libvpx -deadline realtime -b:v 100k "$V/vp8.webm"
ff -f lavfi -i "$VS" -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 100k "$V/vp9.webm"
ff -f lavfi -i "$VS" -c:v mpeg4 -q:v 10 "$V/mpeg4.avi"
ff -f lavfi -i "$VS" -c:v mjpeg -q:v 10 "$V/mjpeg.mov"
ff -f lavfi -i "$VS" -c:v libtheora -q:v 3 "$V/theora.ogv"
ff -f lavfi -i "$VS" -c:v libx264 -preset veryfast -f mpegts "$V/h264.ts"
ff -f lavfi -i "testsrc2=s=16x12:r=4:d=1" "$V/anim.gif"
ff -f lavfi -i "testsrc2=s=16x12:r=4:d=1" -plays 0 -f apng "$V/anim.apng"

du -sh "$C"

# ---------------------------------------------------------------- document
# 4 header bytes (n_pages LE, max_out, max_pixels; see fuzz_document.c), then
# pdfinfo text / a pdftoppm stream / a page spec.
D="$C/document"
mkdir -p "$D"
printf '\003\000\040\340Title:          report\nPages:          3\nEncrypted:      no\nPage    1 size: 612 x 792 pts (letter)\nPage    1 rot:  0\nPage    2 size: 841.89 x 595.276 pts (A4)\nPage    2 rot:  90\nPage    3 size: 595.276 x 841.89 pts (A4)\nPage    3 rot:  0\n' >"$D/info.txt"
printf '\001\000\040\340Pages:          1\nPage    1 size: 14400 x 14400 pts\n' >"$D/info-huge.txt"
printf '\005\000\040\340Pages:          5\nPage    1 size: 612 x 792 pts\nPage    3 size: 612 x 792 pts\nPage    2 rot:  270\n' >"$D/info-gap.txt"
printf '\001\000\040\340Syntax Error: something\nPages: \n' >"$D/info-nopages.txt"
python3 - "$D" <<'PY'
import sys
d = sys.argv[1] + "/"
def ppm(w, h, seed, comment=False):
    return b"P6\n" + (b"# pdftoppm\n" if comment else b"") + b"%d %d\n255\n" % (w, h) + \
        bytes(((x * 7 + seed) & 255) for x in range(w * h * 3))
open(d + "ppm-one.bin", "wb").write(bytes((2, 0, 32, 224)) + ppm(5, 3, 1))
open(d + "ppm-two.bin", "wb").write(bytes((2, 0, 32, 10)) + ppm(4, 4, 2, True) + ppm(2, 6, 3))
open(d + "ppm-short.bin", "wb").write(bytes((2, 0, 32, 224)) + ppm(8, 8, 4)[:100])
PY
printf '\012\000\007\000 1-5,8' >"$D/pages.txt"
printf '\377\377\037\0001 - 3 , 9998-10000,2,2' >"$D/pages-open.txt"
printf '\002\000\007\000' >"$D/pages-empty.txt"
printf '\020\000\003\000 4-2' >"$D/pages-bad.txt"
