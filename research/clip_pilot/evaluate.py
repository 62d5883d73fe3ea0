"""Evaluate a tiny CLIP trained by train_clip.py on held-out renders.

Usage (from a scratch folder outside the repository, PYTHONPATH=<repository root>):
    python evaluate.py --run runs/final --calib data/calib --test data/test --obf data/obf

(a) zero-shot subject top-1 over all vocabulary subjects (text "a photo of a {subject}"), on held-out
    clips with exactly one subject; per frame and per clip (mean of the sampled frames' embeddings).
(b) unsafe detection: per-concept cosine thresholds against text-embedded concept prompts; clip score =
    max over its sampled frames.  Thresholds are chosen on the calibration split (safe + abstract clips as
    negatives) so that the union false-positive rate there is <= --calib-fp; then recall / FP are measured
    on the test split and on the obfuscated-wording split (unsafe synonyms held out of training captions and
    not blocked by moderation/data/terms).  Two scores are reported: raw cosine ("cos") and the softmax over
    all subject prompts ("prob"); both are per-concept thresholds on text-embedded concept prompts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from train_clip import build_model, get_tokenizer, preprocess

UNSAFE_TEMPLATES = ["a photo of {a} {n}", "{a} {n}", "a cartoon of {a} {n}"]


def article(name: str) -> str:
    return "an" if name[0] in "aeiou" else "a"


@torch.no_grad()
def encode_frames(model, frames: np.ndarray, mean, std, bs: int = 512) -> torch.Tensor:
    N, F = frames.shape[:2]
    flat = torch.from_numpy(frames.reshape(N * F, *frames.shape[2:]))
    out = [model.encode_image(preprocess(flat[i:i + bs], mean, std), normalize=True) for i in range(0, len(flat), bs)]
    return torch.cat(out).view(N, F, -1)


@torch.no_grad()
def encode_texts(model, tok, texts: list[str]) -> torch.Tensor:
    return model.encode_text(tok(texts), normalize=True)


def load(prefix: Path):
    return np.load(prefix.with_suffix(".npy")), json.loads(prefix.with_suffix(".json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=Path("runs/final"))
    ap.add_argument("--calib", type=Path, default=Path("data/calib"))
    ap.add_argument("--test", type=Path, default=Path("data/test"))
    ap.add_argument("--obf", type=Path, default=Path("data/obf"))
    ap.add_argument("--calib-fp", type=float, default=0.01, help="union FP target on the calibration split")
    args = ap.parse_args()
    torch.set_num_threads(2)
    mc = json.loads((args.run / "model_config.json").read_text())
    cc = json.loads((args.run / "concepts.json").read_text())
    model = build_model(mc["open_clip_kwargs"])
    model.load_state_dict(torch.load(args.run / "model.pt", map_location="cpu"))
    model.eval()
    tok = get_tokenizer(mc["open_clip_kwargs"])
    subjects, names, unsafe = cc["subjects"], cc["names"], cc["unsafe"]
    ukeys = list(unsafe)

    subj_txt = encode_texts(model, tok, [f"a photo of {article(names[k])} {names[k]}" for k in subjects])  # (S,D)
    # unsafe concept prompts: small template ensemble, averaged then renormalised
    ut = []
    for k in ukeys:
        e = encode_texts(model, tok, [t.format(a=article(names[k]), n=names[k]) for t in UNSAFE_TEMPLATES]).mean(0)
        ut.append(e / e.norm())
    unsafe_txt = torch.stack(ut)  # (U,D)
    scale = model.logit_scale.exp().item()
    uidx = torch.tensor([subjects.index(k) for k in ukeys])

    def scores(feats: torch.Tensor) -> dict[str, np.ndarray]:
        cos = torch.einsum("nfd,ud->nfu", feats, unsafe_txt).amax(1)  # max over frames
        prob = torch.softmax(scale * torch.einsum("nfd,sd->nfs", feats, subj_txt), -1)[..., uidx].amax(1)
        return {"cos": cos.numpy(), "prob": prob.numpy()}

    report: dict = {"run": str(args.run)}
    # ------------------------------------------------------------------ (a) zero-shot subjects
    test_frames, test_meta = load(args.test)
    tf = encode_frames(model, test_frames, mc["mean"], mc["std"])
    single = [i for i, m in enumerate(test_meta) if len(m["subjects"]) == 1]
    y = torch.tensor([subjects.index(test_meta[i]["subjects"][0]) for i in single])
    sims_f = torch.einsum("nfd,sd->nfs", tf[single], subj_txt)
    frame_acc = (sims_f.argmax(-1) == y[:, None]).float().mean().item()
    clip_emb = tf[single].mean(1)
    clip_acc = ((clip_emb @ subj_txt.t()).argmax(-1) == y).float().mean().item()
    safe_only = torch.tensor([subjects[v] not in unsafe for v in y.tolist()])
    sims_safe = (clip_emb @ subj_txt.t())
    acc_safe = (sims_safe[safe_only].argmax(-1) == y[safe_only]).float().mean().item()
    per_subj = {}
    pred = (clip_emb @ subj_txt.t()).argmax(-1)
    for s in range(len(subjects)):
        m = y == s
        if m.any():
            per_subj[subjects[s]] = round((pred[m] == s).float().mean().item(), 3)
    multi = [i for i, m in enumerate(test_meta) if len(m["subjects"]) > 1]
    top1_in = np.mean([subjects[int((tf[i].mean(0) @ subj_txt.t()).argmax())] in test_meta[i]["subjects"] for i in multi])
    report["zero_shot"] = {
        "n_single_subject_clips": len(single), "n_subjects": len(subjects),
        "top1_per_frame": round(frame_acc, 4), "top1_per_clip": round(clip_acc, 4),
        "top1_per_clip_safe_subject_clips": round(acc_safe, 4),
        "multi_subject_top1_in_set": round(float(top1_in), 4), "n_multi": len(multi),
        "worst_subjects": dict(sorted(per_subj.items(), key=lambda kv: kv[1])[:8]),
    }
    # ------------------------------------------------------------------ (b) unsafe detection
    cal_frames, cal_meta = load(args.calib)
    cs = scores(encode_frames(model, cal_frames, mc["mean"], mc["std"]))
    ts = scores(tf)
    obf_frames, obf_meta = load(args.obf)
    os_ = scores(encode_frames(model, obf_frames, mc["mean"], mc["std"]))
    cal_neg = np.array([not m["unsafe"] for m in cal_meta])
    test_neg = np.array([not m["unsafe"] for m in test_meta])
    for kind in ("cos", "prob"):
        neg = cs[kind][cal_neg]  # (Nneg,U)
        # per-concept thresholds at the (1-alpha) quantile of safe calibration scores; the largest alpha whose
        # union FP on calibration stays <= calib_fp
        best = None
        for alpha in np.linspace(0.0, 0.05, 501):
            thr = np.quantile(neg, 1 - alpha, axis=0, method="higher") + 1e-6
            fp = (neg > thr).any(1).mean()
            if fp <= args.calib_fp:
                best = (alpha, thr)
        alpha, thr = best

        def evaluate(sc: np.ndarray, meta: list[dict]) -> dict:
            flag = sc > thr
            pos = [i for i, m in enumerate(meta) if m["unsafe"]]
            negs = [i for i, m in enumerate(meta) if not m["unsafe"]]
            out = {"n_unsafe": len(pos), "n_safe": len(negs)}
            if pos:
                out["recall_any"] = round(float(flag[pos].any(1).mean()), 4)
                out["recall_correct_concept"] = round(float(np.mean(
                    [all(flag[i, ukeys.index(k)] for k in meta[i]["unsafe"]) for i in pos])), 4)
                out["recall_by_concept"] = {k: round(float(np.mean(
                    [flag[i].any() for i in pos if k in meta[i]["unsafe"]])), 3) for k in ukeys}
            if negs:
                out["fp_rate"] = round(float(flag[negs].any(1).mean()), 4)
                out["fp_by_concept"] = {k: round(float(flag[negs, j].mean()), 4) for j, k in enumerate(ukeys)}
            return out

        report[f"unsafe_{kind}"] = {
            "thresholds": {k: round(float(t), 4) for k, t in zip(ukeys, thr)},
            "calib_alpha_per_concept": round(float(alpha), 4),
            "calib": evaluate(cs[kind], cal_meta),
            "test": evaluate(ts[kind], test_meta),
            "obfuscated": evaluate(os_[kind], obf_meta),
        }
    print(json.dumps(report, indent=1))
    (args.run / "eval.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
