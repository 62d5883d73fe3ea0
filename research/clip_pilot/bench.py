import time, torch, open_clip, sys
torch.set_num_threads(2)
from train_clip import build_model
base = {"embed_dim":128,"text_cfg":{"context_length":32,"vocab_size":49408,"width":64,"heads":4,"layers":4},"quick_gelu":False}
cands = {
 "vit_p8_w160_l6": {"image_size":[112,64],"patch_size":8,"width":160,"layers":6,"head_width":40},
 "vit_p8_w128_l4": {"image_size":[112,64],"patch_size":8,"width":128,"layers":4,"head_width":32},
 "vit_p16_w192_l6": {"image_size":[112,64],"patch_size":16,"width":192,"layers":6,"head_width":32},
 "vit_96x56_p8_w128_l4": {"image_size":[96,56],"patch_size":8,"width":128,"layers":4,"head_width":32},
 "timm_resnet10t": {"image_size":[112,64],"timm_model_name":"resnet10t","timm_model_pretrained":False,"timm_pool":"avg","timm_proj":"linear"},
 "timm_mnv3s": {"image_size":[112,64],"timm_model_name":"mobilenetv3_small_100","timm_model_pretrained":False,"timm_pool":"avg","timm_proj":"linear"},
}
for name in sys.argv[1:]:
    cfg = dict(base, vision_cfg=cands[name]); m = build_model(cfg)
    H,W = cands[name]["image_size"]
    x = torch.randn(256,3,H,W); t = torch.randint(1,1000,(256,32))
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    ts=[]
    for i in range(3):
        t0=time.time(); a,b,s = m(x,t); l=(a@b.t()).logsumexp(1).mean(); opt.zero_grad(); l.backward(); opt.step(); ts.append(time.time()-t0)
    vp = sum(p.numel() for p in m.visual.parameters())
    print(name, f"vision params {vp/1e6:.2f}M total {sum(p.numel() for p in m.parameters())/1e6:.2f}M", [round(v,2) for v in ts], flush=True)
