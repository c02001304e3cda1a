import corrsteer

model, tok = corrsteer.load_model("gemma-3-270m")         # embedded Gemma 3 270M, offline
saes = corrsteer.load_saes("default", model, tok)          # our SAEs at layers 3, 6, 9, 12 (trained once, cached)
task = corrsteer.get_task("food")                          # reward: the continuation talks about food

col = corrsteer.collect(model, tok, task, saes, task.samples("train", 128), batch_size=32, progress=False)
sel = corrsteer.select(col, saes, mode="all")              # CorrSteer-A: the top feature of every layer
print(sel)

ev = corrsteer.evaluate(model, tok, task, sel, task.samples("test", 64), batch_size=32, progress=False)
print(ev)

prompt = tok(["My favourite thing about the weekend is"], return_tensors="pt")
with sel.apply(model):                                     # steers the generated positions only
    out = model.generate(**prompt, max_new_tokens=20, do_sample=False)
print(tok.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True))
