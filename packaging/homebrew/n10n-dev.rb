# Homebrew formula for a tap. The release workflow (.github/workflows/release.yml) fills in the
# version, the repository and the SHA-256 of both macOS tarballs, and attaches the result to the
# release: copy that file into the tap as Formula/n10n-dev.rb.
class N10nDev < Formula
  desc "Linux build machine for a Mac developer in one command (Lima, Docker, Lambda images)"
  homepage "https://github.com/@REPOSITORY@"
  version "@VERSION@"
  license "MIT"

  on_macos do
    on_arm do
      url "https://github.com/@REPOSITORY@/releases/download/v@VERSION@/n10n-dev-v@VERSION@-aarch64-apple-darwin.tar.gz"
      sha256 "@SHA256_AARCH64_APPLE_DARWIN@"
    end
    on_intel do
      url "https://github.com/@REPOSITORY@/releases/download/v@VERSION@/n10n-dev-v@VERSION@-x86_64-apple-darwin.tar.gz"
      sha256 "@SHA256_X86_64_APPLE_DARWIN@"
    end
  end

  # The default backend on a Mac; n10n-dev also works with an ssh host and no VM at all.
  depends_on "lima" => :recommended

  def install
    bin.install "n10n-dev"
    man1.install Dir["man/*.1"]
    bash_completion.install "completions/n10n-dev.bash" => "n10n-dev"
    zsh_completion.install "completions/_n10n-dev"
    fish_completion.install "completions/n10n-dev.fish"
  end

  test do
    assert_match "n10n-dev #{version}", shell_output("#{bin}/n10n-dev --version")
    # With no VM and no project, doctor reports this machine and exits 0 (ready) or 1 (not
    # ready), never anything else.
    ENV["N10N_DEV_HOME"] = testpath/"state"
    report = shell_output("#{bin}/n10n-dev doctor 2>&1; echo \"exit=$?\"")
    assert_match(/^exit=[01]$/, report)
    assert_match "backend", report
    system bin/"n10n-dev", "man", testpath/"man"
    assert_path_exists testpath/"man/n10n-dev-build-image.1"
  end
end
