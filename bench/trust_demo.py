"""The trust defects of issue 14, each shown by a command, on small generated data: run it against
any checkout to see what that version does (by hand; its output goes in the issue notes).

    PYTHONPATH=CHECKOUT .venv/bin/python bench/trust_demo.py OUT_FOLDER

Each line "--- N what: exit CODE" is followed by the last lines the command printed; "(TRACEBACK)"
marks a command that ended in one.
"""
import argparse
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_dataset

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out", type=Path, help="a folder for the demo's data, cache and files (emptied first)")
root = parser.parse_args().out.resolve(); shutil.rmtree(root, ignore_errors=True); root.mkdir(parents=True)
os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
env = {**os.environ, "COLUMNS": "160"}
PY = [sys.executable, "-m", "transfer.cli.main"]

def run(label, *args, cwd=None):
    # In the output folder: `python -m` puts the working directory first on the path, and a checkout
    # there would shadow the one PYTHONPATH names.
    r = subprocess.run([*PY, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd or root)
    out = (r.stdout + r.stderr).strip().splitlines()
    tb = any("Traceback" in line for line in out)
    last = [line for line in out if line.strip()][-3:]
    print(f"--- {label}: exit {r.returncode}{' (TRACEBACK)' if tb else ''}")
    for line in last: print("   ", line[:230])
    return r

data = make_dataset(root / "data")
cache = root / "cache"
common = ["--weights", "random", "--image-size", 32, "--precision", "fp32", "--workers", 0, "--cache-dir", cache]
run("extract", "extract", "--data", data, *common)

# 1. pickle model file runs code
class Touch:
    def __init__(self, m): self.m = m
    def __reduce__(self): return (Path.touch, (self.m,))
marker = root / "PWNED"
(root / "evil.joblib").write_bytes(pickle.dumps({"kind": "svm", "format": 1, "x": Touch(marker)}))
run("1 predict evil.joblib", "predict", root / "evil.joblib", data / "test")
print("    marker file created:", marker.exists())

# 2. two grids, one model file
svm_common = ["--data", data, "--weights", "random", "--image-size", 32, "--precision", "fp32", "--cache-dir", cache, "--cv", 2]
run("2 svm --C-grid 0.01", "svm", *svm_common, "--C-grid", "0.01")
run("2 svm --C-grid 10", "svm", *svm_common, "--C-grid", "10")
sys.path.insert(0, os.environ["PYTHONPATH"])
from transfer.runs.store import ResultsStore

runs = ResultsStore(cache / "results.sqlite").runs(method="svm")
for r in runs:
    p = Path(r.model_path)
    if p.suffix == ".joblib":
        import joblib; m = joblib.load(p)
    else:
        from transfer.runs.models import load_model; m = load_model(p)
    print(f"    run #{r.id}: stored C={r.chosen}, model file {p.name}, C inside the file={(m['model'] if isinstance(m, dict) else m.model).named_steps['svm'].C}")

# 3. truncated cache file
h5 = next(cache.glob("*.h5"))
backup = h5.read_bytes()
h5.write_bytes(backup[: len(backup) // 2])
run("3 extract after truncation", "extract", "--data", data, *common)
print("    moved aside:", [p.name for p in cache.glob("*.damaged-*")])
try:
    __import__("h5py").File(h5, "r").close()
except OSError:
    h5.write_bytes(backup)  # the old code never recovers: restore the file for the next demonstrations
    print("    (file still truncated: restored from a copy for the next steps)")

# 4. flipped bytes in features and in a model file
import h5py

with h5py.File(h5, "r") as f:
    ch = f["layers"]["relu7"]["values"].id.get_chunk_info(0)
raw = bytearray(h5.read_bytes())
for k in range(0, ch.size, 4):   # flip the exponent bit of every float in the first chunk
    raw[ch.byte_offset + k + 3] ^= 0x40
h5.write_bytes(bytes(raw))
run("4 svm on bit-flipped features", "svm", *svm_common, "--C-grid", "1")
model = Path(ResultsStore(cache / "results.sqlite").runs(method="svm")[-1].model_path)
raw = bytearray(model.read_bytes())
if model.suffix == ".joblib":
    raw[len(raw) // 2] ^= 0x40
else:
    with zipfile.ZipFile(model) as z: big = max(z.infolist(), key=lambda i: i.file_size)
    raw[big.header_offset + 30 + len(big.filename) + len(big.extra) + big.compress_size // 2] ^= 0x40
model.write_bytes(bytes(raw))
run("4 predict with a bit-flipped model", "predict", model, data / "test", "--top", 1)

# 5. markup and mathtext in names
mk = make_dataset(root / "markup", classes=("foo[", "$x^$"))
(mk / "train" / "foo[" / "x].jpg").write_bytes(b"broken")
run("5 extract with train/foo[/x].jpg", "extract", "--data", mk, *common[:-1], root / "mcache")
run("5 svm", "svm", "--data", mk, "--weights", "random", "--image-size", 32, "--precision", "fp32", "--cache-dir", root / "mcache", "--cv", 2, "--C-grid", 1)
run("5 report with class $x^$", "report", "--cache-dir", root / "mcache", "--name", "m", cwd=root)

# 6. images
im = make_dataset(root / "images")
ramp = np.tile(np.linspace(0, 65535, 48).astype(np.uint16), (48, 1)); Image.fromarray(ramp).save(root / "deep.png")
src = np.zeros((20, 40), np.uint8); src[:, :20] = 255; img = Image.fromarray(src); ex = img.getexif(); ex[0x0112] = 6
img.save(root / "phone.jpg", exif=ex)
if (Path(os.environ["PYTHONPATH"]) / "transfer" / "images.py").exists():
    from transfer.data.images import read_image
else:
    from transfer.data.datasets import read_image
d = np.asarray(read_image(root / "deep.png"))[:, :, 0]
print(f"--- 6 16-bit ramp 0..65535 read as: min {d.min()}, mean {d.mean():.0f}, max {d.max()} (a viewer: 0..255, mean 128)")
p = np.asarray(read_image(root / "phone.jpg"))
print(f"--- 6 EXIF-rotated 40x20 photo read as shape {p.shape[:2]} (a viewer shows 40 rows x 20 columns)")
Image.fromarray(np.zeros((9000, 9000), np.uint8)).save(im / "train" / "beta" / "huge.png")  # 81 Mpx
bomb = subprocess.run([sys.executable, "-c", "import PIL.Image as I; I.MAX_IMAGE_PIXELS = 10_000_000; import sys; sys.argv=['transfer','data','info',sys.argv[1]]; from transfer.cli.main import app; app()", str(im)], capture_output=True, text=True, env=env, cwd=root)
print(f"--- 6 data info with a bomb (limit lowered to 10 Mpx for the demo): exit {bomb.returncode}{' (TRACEBACK)' if 'Traceback' in bomb.stderr else ''}")
for line in (bomb.stdout + bomb.stderr).strip().splitlines()[-2:]: print("   ", line[:200])
(im / "train" / "beta" / "huge.png").unlink()
Image.fromarray(np.zeros((1, 1), np.uint8)).save(im / "train" / "alpha" / "dot.png")
run("6 bow with a 1x1 image", "bow", "--data", im, "--cache-dir", root / "bcache", "--words", 20, "--sample", 2000, "--step", 8, "--cv", 2, "--C-grid", 1, "--jobs", 1)

# 7. writes outside folders
study = root / "escape.toml"
study.write_text(f'[data]\npath = "{data}"\n\n[svm]\nc_grid = [1.0]\ncv = 2\n\n[[features]]\nweights = "random"\nimage_size = 32\nprecision = "fp32"\n\n[report]\nname = "../../escaped"\n')
run("7 run with [report] name = ../../escaped", "run", study, "--cache-dir", cache, cwd=root)
print("    written outside reports/:", (root.parent / "escaped").exists())
shutil.rmtree(root.parent / "escaped", ignore_errors=True)

# 8. smaller
run("8 svm --jobs 0", "svm", *svm_common, "--jobs", 0)
run("8 extract --workers -1", "extract", "--data", data, "--weights", "random", "--image-size", 32, "--workers", -1, "--cache-dir", root / "c8")
(root / "w.pth").write_text("not weights")
run("8 extract --weights not-a-state-dict", "extract", "--data", data, "--weights", root / "w.pth", "--image-size", 32, "--cache-dir", root / "c8")
bad = root / "badstore"; bad.mkdir(); (bad / "results.sqlite").write_bytes(b"garbage" * 100)
run("8 results on a corrupt store", "results", "--cache-dir", bad)
one = make_dataset(root / "one", classes=("only",))
run("8 finetune on one class", "finetune", "--data", one, "--backbone", "efficientnet_lite0", "--weights", "random", "--cache-dir", root / "c8", "--epochs", 2)
three = make_dataset(root / "three", classes=tuple("abcdefghijklmno"), train=3, test=2)
run("8 scratch, 3 images per class", "scratch", "--data", three, "--cache-dir", root / "c8", "--epochs", 1)
run("8 finetune, 3 images per class", "finetune", "--data", three, "--backbone", "efficientnet_lite0", "--weights", "random", "--cache-dir", root / "c8")
for corrupt in ("vocab-*", "words-*"):
    for f in (root / "bcache" / "bow").glob(corrupt):
        f.write_bytes(f.read_bytes()[:200])
run("8 bow with a corrupt vocabulary and words file", "bow", "--data", im, "--cache-dir", root / "bcache", "--words", 20, "--sample", 2000, "--step", 8, "--cv", 2, "--C-grid", 3, "--jobs", 1)
dup = make_dataset(root / "dup"); (dup / "test" / "alpha" / "copy.png").write_bytes((dup / "train" / "alpha" / "img_000.png").read_bytes())
run("8 extract with a test image equal to a training image", "extract", "--data", dup, *common)
run('7 cache rm ""', "cache", "rm", "", "--cache-dir", cache)
