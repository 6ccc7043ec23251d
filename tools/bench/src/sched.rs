//! (Being written.)

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("this benchmark is not built yet")
}
