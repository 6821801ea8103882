"""``make tables SCALE=smoke|cpu|gpu``: the runs behind the README's tables (:mod:`.plan`), their results CSV
(:mod:`.results`) and the README blocks made from it (:mod:`.readme`)."""
