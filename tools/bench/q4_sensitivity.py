# Which dense layers of clip-tiny's text tower can be 4-bit (issue 20): the
# worst cosine of the 48 fixture texts to the HF f32 references when the
# weights of chosen matrices are rounded (activations f32). Needs the
# experiment patch beside this file (git apply tools/bench/q4_sensitivity.patch;
# make build/mmembed; never commit it applied): MMEMBED_FAKEQ4 is one letter
# per packed matrix in pack order (text: per layer out, fc1, fc2, qkv; then
# the projection): 0 f32, 4 q4 as packed, 8 q8 per channel, a 16 levels
# asymmetric per 32, 5 32 levels asymmetric per 32; the last letter repeats.
#   python3 tools/bench/q4_sensitivity.py 444444444 488888888 888888884:f32
import json, subprocess, os, sys, math
d = json.load(open('tests/fixtures/clip/text_emb.json'))
texts = [x['text'] for x in d]
ref = [x['embedding'] for x in d]
def cos(a, b):
    return sum(x*y for x, y in zip(a, b)) / math.sqrt(sum(x*x for x in a) * sum(y*y for y in b))
def run(mask, dtype='f32'):
    args = ['./build/mmembed', 'embed', '--model', 'tests/fixtures/clip/clip-tiny']
    for t in texts: args += ['--text', t]
    env = dict(os.environ, MMEMBED_DTYPE=dtype)
    if mask: env['MMEMBED_FAKEQ4'] = mask
    out = subprocess.run(args, env=env, capture_output=True, text=True).stdout
    v = [x['embedding'] for x in json.loads(out)['data']]
    return min(cos(a, b) for a, b in zip(v, ref))
for m in sys.argv[1:]:
    dt = 'f32'
    if ':' in m: m, dt = m.split(':')
    print(m, dt, '%.5f' % run(m, dt))
