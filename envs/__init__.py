"""Environment factories: Atari (DeepMind preprocessing on ale-py's vector env) and classic
control, all returning the lab's torch `VecEnv`. Installed as `lab.envs`."""
