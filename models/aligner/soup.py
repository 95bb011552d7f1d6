"""Averages LoRA adapters of one base as one adapter (a weight-space "soup"), exactly: the
merged adapter's update is sum_i w_i * scale_i * B_i A_i, written as one adapter of rank sum r_i
whose A stacks the A_i, whose B stacks w_i * scale_i * B_i, and whose alpha equals its rank
(scale 1). Tried on lora-mix-13 and lora-mix-17 (models/aligner/README.md); not shipped.

    python3 models/aligner/soup.py OUT.safetensors A.safetensors 0.5 B.safetensors 0.5

Needs numpy. Writes f16, with the first adapter's metadata and the merged configuration.
"""
import json,struct,sys
import numpy as np
def load(p):
    b=open(p,'rb').read(); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n]); d=b[8+n:]
    meta=h.pop('__metadata__')
    t={k:np.frombuffer(d[v['data_offsets'][0]:v['data_offsets'][1]],dtype=np.float16 if v['dtype']=='F16' else np.float32).reshape(v['shape']) for k,v in h.items()}
    return meta,t
def save(p,meta,t):
    h={'__metadata__':meta}; off=0; chunks=[]
    for k in sorted(t):
        a=np.ascontiguousarray(t[k].astype(np.float16)); by=a.tobytes()
        h[k]={'dtype':'F16','shape':list(a.shape),'data_offsets':[off,off+len(by)]}; off+=len(by); chunks.append(by)
    hb=json.dumps(h,separators=(',',':')).encode(); hb+=b' '*((8-len(hb)%8)%8)
    open(p,'wb').write(struct.pack('<Q',len(hb))+hb+b''.join(chunks))
# args: out, then pairs path weight
out=sys.argv[1]; parts=[(sys.argv[i],float(sys.argv[i+1])) for i in range(2,len(sys.argv),2)]
loaded=[load(p) for p,_ in parts]
cfgs=[json.loads(m['config']) for m,_ in loaded]
scale=[c['alpha']/c['rank'] for c in cfgs]
R=sum(c['rank'] for c in cfgs)
res={}
for k in loaded[0][1]:
    if not k.endswith('lora_a'): continue
    kb=k[:-1]+'b'
    res[k]=np.concatenate([t[k].astype(np.float32) for _,t in loaded],axis=1)
    res[kb]=np.concatenate([w*s*t[kb].astype(np.float32) for (_,w),s,(_,t) in zip(parts,scale,loaded)],axis=0)
meta=dict(loaded[0][0]); c=dict(cfgs[0]); c['rank']=R; c['alpha']=float(R)  # scale 1: the weights carry each adapter's own scale
meta['config']=json.dumps(c,separators=(',',':'))
save(out,meta,res)
print(out,R,meta['config'])
