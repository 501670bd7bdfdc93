import gzip, os, shutil, sys, time
print("demo-app started at", time.time_ns(), flush=True)
src, dst = os.environ["INPUT_LOCATION"], os.environ["OUTPUT_LOCATION"]
count = 0
for root, dirs, files in os.walk(src):
    for name in sorted(files):
        path = os.path.join(root, name)
        out = os.path.join(dst, os.path.relpath(path, src)) + ".gz"
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(path, "rb") as f, gzip.open(out + ".partial", "wb") as g:
            shutil.copyfileobj(f, g, 1 << 20)
        os.rename(out + ".partial", out)
        count += 1
        print("compressed", os.path.relpath(path, src), os.path.getsize(path), "bytes", flush=True)
print("demo-app wrote", count, "files", flush=True)
sys.exit(0 if count else 3)
