"""``matnet dataset``: VPR-folder and MSLS datasets to NetVLAD dbStruct specs, and back.

``import vpr ROOT --name NAME --spec-dir DIR`` writes ``DIR/NAME_<split>.mat`` for every
split under ``ROOT/images/``; ``import msls ROOT ...`` for every MSLS split whose cities
are under ``ROOT/train_val/``; ``export --dataset DATASET [--root IMAGES] --out DIR`` writes
a dataset's images as a VPR folder (e.g. ``--dataset spec:SPEC.mat --root IMAGES``).  Names in
imported specs are relative to ROOT.
"""
from __future__ import annotations

from pathlib import Path

from . import options as o


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="{import,export}",
                           help="import: dataset folder -> specs; export: spec -> VPR folder")
    imp = sub.add_parser("import", help="write dbStruct specs (<spec-dir>/<name>_<split>.mat) for a dataset folder",
                         description="Write a NetVLAD dbStruct spec for every split of a dataset folder: "
                         "vpr = <root>/images/<split>/{database,queries}/@utm_east@utm_north@...@.jpg; "
                         "msls = Mapillary SLS <root>/train_val/<city>/{database,query}/ (official city split).")
    imp.add_argument("format", choices=["vpr", "msls"], help="vpr (the @utm@ folder format) or msls")
    imp.add_argument("root", help="dataset root folder")
    imp.add_argument("--name", required=True, help="spec name prefix: writes <spec-dir>/<name>_<split>.mat")
    o.add_spec_dir(imp, required=True, help="folder for the spec files", old=())
    imp.add_argument("--pos-dist-thr", type=float, default=25, help="positive distance threshold in m (default 25)")
    imp.add_argument("--cities", help="msls: comma-separated cities (default: the official train and val cities "
                     "present under <root>/train_val)")
    imp.add_argument("--force", action="store_true", help="replace existing spec files")
    exp = sub.add_parser("export", help="write a spec's images as a VPR folder (symlinks, or --copy)",
                         description="Write the images of a NetVLAD spec (pitts30k/250k, tokyo247, tokyoTM, or "
                         "an imported one) as <out>/images/<whichSet>/{database,queries}/@utm...@ files, in the "
                         "spec's order (also listed in {database,queries}_images_paths.txt).")
    o.add_dataset(exp, help="the dataset to export (a released spec's dataset, an imported one, ...)",
                  old=("--spec",))
    o.add_root(exp, help="image root of a MATLAB-named or spec: dataset (as dbRoot: Pittsburgh/, Tokyo247/, "
                         "TokyoTM/, or the root an imported spec's names are relative to; default: localPaths')",
               old=())
    o.add_spec_dir(exp, old=())
    o.add_out(exp, required=True, help="output dataset root")
    exp.add_argument("--copy", action="store_true", help="copy the files instead of symlinking them")
    exp.add_argument("--force", action="store_true", help="write into non-empty output folders")


def import_specs(fmt: str, root, name: str, specDir, posDistThr=25, cities=None, force=False, log=print) -> list[Path]:
    """Build every split's dataset first, then write ``<specDir>/<name>_<split>.mat``
    (existing files refused unless ``force``).  Returns the paths written."""
    from converters.dbstruct import DbStructError, save_dbstruct
    from ..datasets.spec import dbstruct_of
    dbs = []
    if fmt == "vpr":
        from ..datasets.vpr import dbVPR
        from ..datasets.vpr_format import VPRFormatError
        images = Path(root).expanduser() / "images"
        if not images.is_dir():
            raise VPRFormatError(f"{images}: folder not found (expected {images}/<split>/{{database,queries}}, "
                                 f"one folder per split)")
        splits = sorted(p.name for p in images.iterdir() if p.is_dir())
        if not splits:
            raise VPRFormatError(f"{images}: no split folders (train, val, test, ...)")
        dbs = [dbVPR(root, s, posDistThr=posDistThr) for s in splits]
    else:
        from ..datasets.msls import dbMSLS, present_splits
        for split, split_cities in present_splits(root, cities).items():
            dbs.append(dbMSLS(root, split, cities=split_cities, posDistThr=posDistThr))
    outs = [Path(specDir).expanduser() / f"{name}_{db.whichSet}.mat" for db in dbs]
    for out in outs:
        if out.exists() and not force:
            raise DbStructError(f"{out}: the spec file already exists (pass --force to replace it)")
    for db, out in zip(dbs, outs):
        save_dbstruct(out, dbstruct_of(db), force=force)
        log(f"{out}: {db.numImages} database images, {db.numQueries} queries (whichSet {db.whichSet})")
    return outs


def run(args) -> int:
    if args.action == "import":
        cities = args.cities.split(",") if args.cities else None
        import_specs(args.format, args.root, args.name, args.spec_dir, args.pos_dist_thr, cities, args.force)
    else:
        from ..datasets import parse_dataset
        from ..datasets.vpr_export import export_vpr
        db = parse_dataset(args.dataset, args.root, args.spec_dir)
        export_vpr(db, None, args.out, copy=args.copy, force=args.force)
    return 0
