#!/usr/bin/env python3
"""The longest functions of host/src (test modules left out): usage
tools/function-lengths.py host/src. Counts lines from `fn` to the closing
brace at the same indentation; the architecture guide keeps them near 80."""
import re,pathlib,sys
res=[]
for p in pathlib.Path(sys.argv[1]).rglob('*.rs'):
    if 'proptests' in p.name or p.name=='tests.rs': continue
    lines=p.read_text().split('\n'); intest=False
    for i,l in enumerate(lines):
        if l.startswith('#[cfg(test)]'): break
        m=re.match(r'^(\s*)(pub(\([a-z]+\))? )?(async )?fn (\w+)',l)
        if m and not l.rstrip().endswith(';'):
            ind=len(m.group(1)); j=i+1
            while j<len(lines) and not (lines[j].startswith(' '*ind+'}') and len(lines[j])-len(lines[j].lstrip())==ind): j+=1
            res.append((j-i+1,str(p).replace(sys.argv[1],''),m.group(5)))
res.sort(reverse=True)
for r in res[:6]: print(*r)
print("functions over 80 lines:", sum(1 for r in res if r[0]>80))
