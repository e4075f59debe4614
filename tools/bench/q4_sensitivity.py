# How 4-bit grids and mixes of types do on clip-tiny's text tower (issue 20):
# the worst and the mean cosine of the 48 fixture texts to the HF f32
# references when the weights of the q4 matrices are rounded by another
# scheme (activations f32). Needs the experiment patch beside this file
# (git apply tools/bench/q4_sensitivity.patch; make build/mmembed; never
# commit it applied). Each argument is MASK[:G[:S]] (see the patch's
# src/nn/q4x_experiment.c): MASK one letter per q4 matrix in pack order
# (0 f32, 8 q8, u even 16 levels, n IQ4_NL levels, a asymmetric; the last
# repeats), G the group size (64), S the step storage (h f16, b 8 bits,
# f f32). The matrices that mm_encoder_text_dtype keeps in q8 are q8 blobs
# and not in the mask. Measured (text tower: block 1's out, fc1, fc2, qkv;
# with block 0 and the projection q8 as packed):
#   u:64:h 0.9879 | u:64:b 0.9879 | u:32:b 0.9877 | n:64:b 0.9850 |
#   n:32:b 0.9852; without the kept q8 blocks: u:64:h 0.916, n:32:b 0.967,
#   n:16:h 0.972 (4.5 bits a weight), every matrix q8 0.9997.
#   python3 tools/bench/q4_sensitivity.py u:64:h n:32:b 0
import json, subprocess, os, sys, math
d = json.load(open('tests/fixtures/clip/text_emb.json'))
texts = [x['text'] for x in d]
ref = [x['embedding'] for x in d]
def cos(a, b):
    return sum(x*y for x, y in zip(a, b)) / math.sqrt(sum(x*x for x in a) * sum(y*y for y in b))
def run(mask, g, s):
    args = ['./build/mmembed', 'embed', '--model', 'tests/fixtures/clip/clip-tiny']
    for t in texts: args += ['--text', t]
    env = dict(os.environ, MMEMBED_DTYPE='q4', MMEMBED_Q4X=mask, MMEMBED_Q4X_G=g, MMEMBED_Q4X_S=s)
    out = subprocess.run(args, env=env, capture_output=True, text=True).stdout
    c = [cos(a, b) for a, b in zip([x['embedding'] for x in json.loads(out)['data']], ref)]
    return min(c), 1 - sum(c) / len(c)
for arg in sys.argv[1:]:
    p = (arg.split(':') + ['64', 'h'])[:3] if ':' in arg else [arg, '64', 'h']
    w, m = run(*p)
    print('%s group %s step %s: worst %.5f mean loss %.5f' % (p[0], p[1], p[2], w, m))
